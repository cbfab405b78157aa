# Stands in for the NixOS image builder in tests: these machines have no nixpkgs,
# so this derivation makes a small qcow2 with qemu-img. Its store path depends on
# the configuration file's content, like a real NixOS image's does.
#   nix-build fake-nixos-image.nix --no-out-link --arg configuration /path/to/configuration.nix
{ configuration, size ? "64M" }:
derivation {
  name = "nixos-image-fake";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  inherit configuration size;
  args = [ "-c" ''
    set -e
    mkdir -p $out
    cp $configuration $out/configuration.nix
    qemu-img create -q -f qcow2 $out/nixos.qcow2 $size
  '' ];
}
