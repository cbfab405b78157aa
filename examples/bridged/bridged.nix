# bridged.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
{
  services.nvirtd = {
    enable = true;
    domains.nas = {
      cpu.amount = 2;
      memory = { amount = 4; unit = "GiB"; };
      disks = {
        root = { type = "file"; driver.type = "qcow2"; path = "/var/lib/libvirt/images/nas-root.qcow2"; };
        tank = { type = "block"; driver.type = "raw"; path = "/dev/disk/by-id/ata-EXAMPLE-DISK"; };
      };
      interfaces = {
        lan = { bridge = "br0"; mac = "52:54:00:4e:41:53"; };
        lan2.network = "lan";
      };
    };
    networks.lan = { forward = "bridge"; bridge = "br0"; };
  };
}
