# The original module's VMs, unchanged, on nvirtd: import this next to module.nix and keep
# `libvirt.domains.<name>` as it was while you move it to `services.nvirtd.domains.<name>`
# (docs/migration.md). Every option keeps its name; evaluation warns until the move is done.
{ lib, ... }:
{
  imports = [ (lib.mkRenamedOptionModule [ "libvirt" "domains" ] [ "services" "nvirtd" "domains" ]) ];
}
