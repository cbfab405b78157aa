# nixos-vms.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
# On a real host, `path = ./nixos/base.nix;` (a Nix path) works too: the module writes
# it as the file's absolute path.
let
  vm = { cpus, memory, size }: {
    cpu.amount = cpus;
    memory = { amount = memory; unit = "GiB"; };
    disks.root = { type = "nix"; path = "/etc/nvirt.d/nixos/base.nix"; nix = { inherit size; unit = "G"; }; };
    interfaces.lan.network = "nixlab";
  };
in
{
  services.nvirtd = {
    enable = true;
    domains = {
      web1 = vm { cpus = 2; memory = 2; size = 20; };
      web2 = vm { cpus = 2; memory = 2; size = 20; };
      db = vm { cpus = 4; memory = 8; size = 50; } // { shutdownTimeout = 300; };
    };
    networks.nixlab = {
      forward = "nat";
      domain = "nixlab.internal";
      ip = { address = "10.77.0.1"; prefix = 24; };
      dhcp = {
        range = { start = "10.77.0.100"; end = "10.77.0.200"; };
        hosts = { web1 = "10.77.0.11"; web2 = "10.77.0.12"; db = "10.77.0.20"; };
      };
    };
  };
}
