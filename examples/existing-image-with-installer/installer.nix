# installer.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
{
  services.nvirtd = {
    enable = true;
    domains.debian = {
      cpu.amount = 2;
      memory = { amount = 2; unit = "GiB"; };
      enableVnc = true;
      disks = {
        installer = {
          type = "file"; device = "cdrom";
          path = "/var/lib/libvirt/images/debian-12-netinst.iso";
          bootOrder = 1;
        };
        root = {
          type = "file"; driver = { name = "qemu"; type = "qcow2"; };
          path = "/var/lib/libvirt/images/debian-root.qcow2";
          bootOrder = 2;
        };
        data = {
          type = "file"; driver = { name = "qemu"; type = "raw"; };
          path = "/var/lib/libvirt/images/debian-data.img";
        };
      };
      interfaces.lan.network = "default";
    };
  };
}
