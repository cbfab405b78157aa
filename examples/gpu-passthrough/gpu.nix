# gpu.json as NixOS module options (imports = [ .../contrib/nixos/module.nix ]).
{
  services.nvirtd = {
    enable = true;
    domains.gaming = {
      cpu = {
        amount = 8; model = "host-passthrough";
        topology = { sockets = 1; cores = 4; threads = 2; };
        pin = { "0" = "4"; "1" = "5"; "2" = "6"; "3" = "7"; "4" = "12"; "5" = "13"; "6" = "14"; "7" = "15"; };
        emulatorPin = "0-1";
      };
      memory = { amount = 16; unit = "GiB"; hugepages = { size = 1; unit = "GiB"; }; };
      firmware = "efi";
      hostdevs = {
        gpu = { type = "pci"; address = "0000:01:00.0"; };
        gpu-audio = { type = "pci"; address = "0000:01:00.1"; };
        keyboard = { type = "usb"; vendor = "0x046d"; product = "0xc52b"; };
      };
      disks.root = { type = "block"; path = "/dev/vg0/gaming"; };
      interfaces.lan.network = "default";
    };
  };
}
