# elastic.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
{
  services.nvirtd = {
    enable = true;
    domains.build-runner = {
      cpu = { amount = 2; max = 8; };
      memory = { amount = 4; max = 16; unit = "GiB"; };
      disks = {
        root = { type = "file"; path = "/var/lib/libvirt/images/build-runner.qcow2"; driver.type = "qcow2"; };
        cache = { type = "block"; path = "/dev/vg0/build-cache"; };
      };
      interfaces.lan.network = "default";
    };
  };
}
