# secure.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
{
  services.nvirtd = {
    enable = true;
    domains.win-builder = {
      cpu.amount = 4;
      memory = { amount = 8; unit = "GiB"; };
      firmware = "efi";
      tpm = true;
      consoleLog = true;
      virtType = "kvm";
      disks.root = { type = "block"; driver.type = "raw"; path = "/dev/vg0/win-builder"; };
      shares.src.path = "/srv/src";
      interfaces.lan = { network = "default"; model = "e1000"; };
    };
  };
}
