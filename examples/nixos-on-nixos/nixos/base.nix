# One NixOS configuration, built once into a qcow2 base image that all three VMs
# share; each VM writes only to its own overlay. Hostnames come from the static
# DHCP leases of the nixlab network.
{ modulesPath, lib, ... }:
{
  imports = [ "${modulesPath}/profiles/qemu-guest.nix" ];

  networking.hostName = lib.mkDefault "";  # taken from DHCP
  networking.useDHCP = true;
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = [
    # "ssh-ed25519 AAAA... you@host"
  ];
  services.qemuGuest.enable = true;  # nvirtd adds the guest agent channel
  system.stateVersion = "24.05";
}
