# contrib/nixos/module.nix evaluated by nixpkgs' own module system (lib.evalModules), with
# stubs for the few NixOS options it sets and the packages it names: what the module
# would write, without a nixpkgs checkout. tests/nixos/test_module.py drives it:
#
#   nix-instantiate --eval --strict --json tests/nixos/eval.nix \
#     --arg lib 'import <nixpkgs/lib>' --arg configuration ./some-options.nix -A nvirtdJson
{ lib, configuration ? { }, extraModules ? [ ] }:
let
  inherit (lib) mkOption types;
  # a package is its name here: enough for PATH lists and ExecStart
  package = name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  pkgs = {
    writeText = name: text: (package name) // { inherit text; };
    qemu_kvm = package "qemu";
    iproute2 = package "iproute2";
    git = package "git";
  };
  # the NixOS options the module sets, as loosely typed as it needs (their real types live in nixpkgs)
  nixosStubs = {
    options = {
      virtualisation.libvirtd.enable = mkOption { type = types.bool; default = false; };
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule { options.source = mkOption { type = types.raw; }; });
        default = { };
      };
      environment.systemPackages = mkOption { type = types.listOf types.raw; default = [ ]; };
      systemd.services = mkOption { type = types.attrsOf (types.attrsOf types.raw); default = { }; };
      nix.package = mkOption { type = types.raw; default = package "nix"; };
      nix.nixPath = mkOption { type = types.listOf types.str; default = [ "nixpkgs=/nix/var/nix/profiles/per-user/root/channels/nixos" ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };
    };
    config.services.nvirtd.package = lib.mkDefault (package "nvirtd");
  };
  evaluated = lib.evalModules {
    modules = [ nixosStubs ../../contrib/nixos/module.nix configuration ] ++ extraModules;
    specialArgs = { inherit pkgs; };
  };
  inherit (evaluated) config options;
  service = config.systemd.services.nvirtd;
in
{
  # what /etc/nvirt.d/nixos.json would hold
  nvirtdJson = builtins.fromJSON config.environment.etc."nvirt.d/nixos.json".source.text;
  unit = {
    inherit (service) wants after wantedBy environment;
    path = map (p: p.name) service.path;
    serviceConfig = service.serviceConfig;
  };
  warnings = config.warnings;
  # every option under services.nvirtd, as the NixOS manual lists them
  options = map (o: { inherit (o) name type; }) (builtins.filter (o: lib.hasPrefix "services.nvirtd." o.name && !o.internal)
    (lib.optionAttrSetToDocList options));
}
