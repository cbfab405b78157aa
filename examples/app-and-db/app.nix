# app.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
let base = "/var/lib/nvirtd-bases/debian-12-genericcloud-amd64.qcow2"; in
{
  services.nvirtd = {
    enable = true;
    domains.db = {
      cpu.amount = 2;
      memory = { amount = 4; unit = "GiB"; };
      disks.root = { type = "image"; path = base; image.size = 40; };
      interfaces.lan.network = "default";
      cloudInit.userData = "#cloud-config\npackages: [postgresql, qemu-guest-agent]\nruncmd:\n  - [systemctl, enable, --now, qemu-guest-agent]\n";
    };
    domains.app = {
      cpu = { amount = 2; max = 8; };
      memory = { amount = 2; max = 8; unit = "GiB"; };
      disks.root = { type = "image"; path = base; };
      interfaces.lan.network = "default";
      startAfter = [ "db" ];
      startAfterAgent = true;
    };
  };
}
