# debian.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
# debian.user-data goes next to it, as root's and not world-readable (it may hold secrets):
#   environment.etc."nvirt.d/debian.user-data" = { source = ./debian.user-data; mode = "0600"; };
# or give its text inline: cloudInit.userData = builtins.readFile ./debian.user-data;
{
  services.nvirtd = {
    enable = true;
    domains.debian = {
      cpu.amount = 2;
      memory = { amount = 2; unit = "GiB"; };
      disks.root = { type = "image"; path = "/var/lib/nvirtd-bases/debian-12-genericcloud-amd64.qcow2"; image.size = 20; };
      interfaces.lan.network = "default";
      cloudInit = {
        userDataFile = "debian.user-data";
        networkConfig = "version: 2\nethernets:\n  all:\n    match: {name: \"en*\"}\n    dhcp4: true\n";
      };
    };
  };
}
