# services.nvirtd: nvirtd as a NixOS service, with its VMs declared in Nix.
#
#   imports = [ ./contrib/nixos/module.nix ];
#   services.nvirtd = {
#     enable = true;
#     domains.web = {
#       cpu.amount = 2;
#       memory = { amount = 2; unit = "GiB"; };
#       disks.root = { type = "nix"; path = ./web.nix; nix.size = 20; };
#       interfaces.lan.network = "lab";
#     };
#     networks.lab = { ip.address = "10.77.0.1"; dhcp.hosts.web = "10.77.0.10"; };
#   };
#
# The options mirror the JSON format one to one (docs/configuration.md); a test keeps
# the blocks marked `schema: X` in step with the JSON Schema. They are rendered to
# /etc/nvirt.d/nixos.json, and nvirtd is reloaded when that file changes.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  cfg = config.services.nvirtd;
  nullOr = types.nullOr;
  opt = type: default: description: mkOption { inherit type default description; };
  req = type: description: mkOption { inherit type description; };

  # schema: Boot
  bootModule = {
    options = {
      kernel = req types.path "Kernel image on the host (direct kernel boot).";
      initrd = opt (nullOr types.path) null "Initramfs on the host.";
      cmdline = opt (nullOr types.str) null "Kernel command line.";
    };
  };
  # end schema

  # schema: NixImage
  nixImageModule = {
    options = {
      flake = opt (nullOr types.str) null "Build a flake's NixOS configuration instead of a file: FLAKEREF#NAME (nixosConfigurations.NAME.config.system.build.images.qemu); path is then left out.";
      attribute = opt (nullOr types.str) null "With path a flake's directory: build its nixosConfigurations.ATTRIBUTE.";
      size = opt (nullOr types.ints.positive) null "Virtual size of the overlay; default: the base image's. Raising it grows the overlay in place (live while the guest runs); lowering it is refused.";
      unit = opt (types.enum [ "K" "M" "G" "T" ]) "G" "Unit of size.";
      onImageChange = opt (types.enum [ "keep" "recreate" ]) "keep" "Keep the overlay on the old base, or recreate it.";
    };
  };
  # end schema

  # schema: Overlay
  overlayModule = {
    options = {
      size = opt (nullOr types.ints.positive) null "Virtual size of the overlay; default: the base image's. Raising it grows the overlay in place; lowering it is refused.";
      unit = opt (types.enum [ "K" "M" "G" "T" ]) "G" "Unit of size.";
      onImageChange = opt (types.enum [ "keep" "recreate" ]) "keep" "When path names another base: keep the overlay on the old one, or recreate it.";
    };
  };
  # end schema

  # schema: Migration
  migrationModule = {
    options = {
      timeout = opt (types.ints.between 10 86400) 300 "Seconds a live migration may take.";
      onTimeout = opt (types.enum [ "abort" "postcopy" ]) "abort" "abort: it goes on running where it was, tried again later; postcopy: it switches to the new host and fetches the rest of its memory from the old one.";
      autoConverge = opt types.bool true "Slow the guest's vCPUs down when its memory changes faster than it is copied.";
      tls = opt types.bool false "Encrypt the migration stream (libvirt's migrate_tls_* settings on both hosts).";
      bandwidth = opt (nullOr (types.ints.between 1 1000000)) null "MiB/s the migration may use, memory and disks (null: no limit).";
    };
  };
  # end schema

  # schema: CloudInit
  cloudInitModule = {
    options = {
      userData = opt (nullOr types.str) null "user-data: a #cloud-config document, or a script.";
      userDataFile = opt (nullOr (types.either types.path types.str)) null "user-data from a file.";
      metaData = opt (nullOr types.str) null "meta-data; default: instance-id and local-hostname.";
      metaDataFile = opt (nullOr (types.either types.path types.str)) null "meta-data from a file.";
      networkConfig = opt (nullOr types.str) null "network-config (version 1 or 2).";
      networkConfigFile = opt (nullOr (types.either types.path types.str)) null "network-config from a file.";
    };
  };
  # end schema

  # schema: Disk
  diskModule = {
    options = {
      type = req (types.enum [ "nix" "image" "file" "block" "dir" "volume" ]) "Where the disk comes from.";
      device = opt (types.enum [ "disk" "cdrom" ]) "disk" "How the guest sees it.";
      driver.name = opt (types.enum [ "qemu" "tap" "tap2" "phy" "file" ]) "qemu" "Hypervisor driver.";
      driver.type = opt (nullOr (types.enum [ "aio" "raw" "bochs" "qcow2" "qed" "fat" ])) null "Image format.";
      path = opt (nullOr (types.either types.path types.str)) null "nix: a NixOS configuration file (or, with nix.attribute, a flake's directory; left out with nix.flake); image: the base image (a cloud image); file/block/dir: a host path; volume: POOL/VOLUME.";
      target = opt (nullOr types.str) null "Guest device name (vda, sdb, ...).";
      readOnly = opt types.bool false "Attach read-only.";
      nix = opt (nullOr (types.submodule nixImageModule)) null "Overlay settings of a nix disk.";
      image = opt (nullOr (types.submodule overlayModule)) null "Overlay settings of an image disk (its base is path).";
      bootOrder = opt (nullOr types.ints.positive) null "Boot priority, 1 first.";
    };
  };
  # end schema

  # schema: Interface
  interfaceModule = {
    options = {
      network = opt (nullOr types.str) null "A libvirt network.";
      bridge = opt (nullOr types.str) null "An existing host bridge.";
      mac = opt (nullOr types.str) null "Default: derived from the domain UUID and the NIC name.";
      model = opt types.str "virtio" "NIC model.";
    };
  };
  # end schema

  # schema: Share
  shareModule = {
    options = {
      path = req types.str "Host directory shared with the guest (virtiofs).";
      readOnly = opt types.bool false "Read-only share.";
    };
  };
  # end schema

  # schema: BackupSchedule
  backupModule = {
    options = {
      every = opt types.str "daily" "How often: hourly, daily, weekly, or a duration (12h, 30m).";
      keep = opt types.ints.positive 7 "Backups kept; the newest complete one is never deleted.";
      to = opt types.str "/var/backups/nvirtd" "Backups go to TO/NAME/UTC-TIME/.";
    };
  };
  # end schema

  # schema: Hostdev
  hostdevModule = {
    options = {
      type = req (types.enum [ "pci" "usb" ]) "pci or usb.";
      address = opt (nullOr types.str) null "pci: [DOMAIN:]BUS:SLOT.FUNCTION (0000:01:00.0, as lspci -D prints it); usb: BUS.DEVICE (1.5), or give vendor and product.";
      vendor = opt (nullOr types.str) null "usb: vendor id, 0x1050.";
      product = opt (nullOr types.str) null "usb: product id, 0x0407.";
    };
  };
  # end schema

  # schema: NumaCell
  numaModule = {
    options = {
      cpus = req types.str "The guest's vCPUs in this cell, a cpuset like 0-3.";
      memory = req types.ints.positive "The cell's memory, in MiB.";
    };
  };
  # end schema

  # schema: Domain
  domainModule = {
    options = {
      host = opt (nullOr types.str) null "The fleet host it runs on (nvirtd's --host); once one domain names a host, one without is placed nowhere. Changed while it runs: it moves there by live migration.";
      hosts = opt (types.listOf types.str) [ ] "Where it goes while its host is drained (nvirtd drain): the first of these that is a peer.";
      evacuate = opt (types.enum [ "migrate" "stop" ]) "migrate" "What nvirtd drain does with it: migrate to the first of hosts, or stop it until the drain ends.";
      migration = opt (types.submodule migrationModule) { } "How it moves between hosts: a live migration with its overlays.";
      uuid = opt (nullOr types.str) null "Default: derived from the name, stable.";
      cpu.amount = opt types.ints.positive 1 "Number of virtual CPUs.";
      cpu.max = opt (nullOr (types.ints.between 1 1024)) null "Most vCPUs: cpu.amount can rise to it while the guest runs (no restart).";
      cpu.model = opt (nullOr types.str) null "host-passthrough, host-model, or a named model (virsh cpu-models x86_64).";
      cpu.topology = opt (nullOr (types.submodule {
        options.sockets = opt types.ints.positive 1 "Sockets.";
        options.cores = opt types.ints.positive 1 "Cores per socket.";
        options.threads = opt types.ints.positive 1 "Threads per core.";
      })) null "Sockets x cores x threads; their product is cpu.amount.";
      cpu.pin = opt (types.attrsOf types.str) { } "vCPU number -> the host CPUs it may run on (a cpuset).";
      cpu.emulatorPin = opt (nullOr types.str) null "The host CPUs QEMU's own threads may run on.";
      memory.amount = req types.ints.positive "Amount of memory, in memory.unit.";
      memory.max = opt (nullOr types.ints.positive) null "Most memory, in memory.unit: amount is then the balloon's target, changed live.";
      memory.hugepages = opt (nullOr (types.submodule {
        options.size = opt types.ints.positive 2 "Size of one page, in unit.";
        options.unit = opt (types.enum [ "KiB" "MiB" "GiB" ]) "MiB" "KiB, MiB or GiB.";
      })) null "Back the guest's memory with the host's hugepages ({ } for 2 MiB pages).";
      memory.unit = opt (types.enum [ "b" "bytes" "KB" "k" "KiB" "MB" "M" "MiB" "GB" "G" "GiB" "TB" "T" "TiB" ]) "KiB" "Unit of memory.amount.";
      enableVnc = opt types.bool false "VNC console on 127.0.0.1.";
      state = opt (types.enum [ "running" "stopped" ]) "running" "Desired state; autostart follows.";
      restartOnChange = opt types.bool false "Restart a running domain when its definition changes.";
      shutdownTimeout = opt types.ints.unsigned 120 "Seconds of ACPI shutdown before destroy.";
      virtType = opt (nullOr (types.enum [ "auto" "kvm" "qemu" ])) null "Overrides the daemon's --virt-type.";
      firmware = opt (types.enum [ "bios" "efi" ]) "bios" "bios or efi.";
      tpm = opt types.bool false "An emulated TPM 2.0.";
      consoleLog = opt types.bool false "Log the serial console to the state dir.";
      boot = opt (nullOr (types.submodule bootModule)) null "Direct kernel boot.";
      disks = opt (types.attrsOf (types.submodule diskModule)) { } "Disks by name.";
      interfaces = opt (types.attrsOf (types.submodule interfaceModule)) { } "NICs by name.";
      shares = opt (types.attrsOf (types.submodule shareModule)) { } "Shared folders by mount tag.";
      hostdevs = opt (types.attrsOf (types.submodule hostdevModule)) { } "Host devices passed through (PCI, USB), by name.";
      numa = opt (types.listOf (types.submodule numaModule)) [ ] "NUMA cells: which vCPUs and how much memory each has.";
      startAfter = opt (types.listOf types.str) [ ] "Domains this one starts after (started only while they run; stopped before them when removed together).";
      startAfterAgent = opt types.bool false "With startAfter: start only once their QEMU guest agent answers.";
      backup = opt (nullOr (types.submodule backupModule)) null "Scheduled backups with retention.";
      cloudInit = opt (nullOr (types.submodule cloudInitModule)) null "A NoCloud seed for a cloud image's cloud-init (a CD-ROM, label cidata).";
    };
  };
  # end schema

  # schema: Network
  networkModule = {
    options = {
      uuid = opt (nullOr types.str) null "Default: derived from the name, stable.";
      forward = opt (types.enum [ "nat" "route" "open" "isolated" "bridge" ]) "nat" "Forward mode.";
      bridge = opt (nullOr types.str) null "Host bridge to use (forward = bridge) or to create.";
      ip = opt (nullOr (types.submodule {
        options.address = req types.str "The host's address on the network.";
        options.prefix = opt types.ints.positive 24 "Prefix length.";
      })) null "IPv4 address of the host on the network.";
      dhcp = opt (nullOr (types.submodule {
        options.range = opt (nullOr (types.submodule {
          options.start = req types.str "First address handed out.";
          options.end = req types.str "Last address handed out.";
        })) null "Dynamic range.";
        options.hosts = opt (types.attrsOf types.str) { } "Static leases: MAC, domain or DOMAIN.NIC -> IPv4.";
      })) null "DHCP served by libvirt's dnsmasq.";
      ip6 = opt (nullOr (types.submodule {
        options.address = req types.str "The host's IPv6 address on the network.";
        options.prefix = opt types.ints.positive 64 "Prefix length.";
      })) null "IPv6 address of the host on the network.";
      dns = opt (nullOr (types.submodule {
        options.hosts = opt (types.attrsOf types.str) { } "Extra names: hostname -> address.";
      })) null "DNS entries served by the network's dnsmasq.";
      domain = opt (nullOr types.str) null "DNS domain of the network.";
    };
  };
  # end schema

  # drop unset options, and turn Nix paths (configurations) into strings
  clean = value:
    if builtins.isAttrs value then
      lib.mapAttrs (_: clean) (lib.filterAttrs (_: v: v != null) value)
    else if builtins.isPath value then toString value
    else value;
  configFile = pkgs.writeText "nvirtd-nixos.json" (builtins.toJSON (clean {
    domains = cfg.domains;
    networks = cfg.networks;
  }));
in
{
  options.services.nvirtd = {
    enable = mkEnableOption "nvirtd, the declarative VM manager for libvirt";
    package = mkOption {
      type = types.package;
      description = "The nvirtd package.";
      example = literalExpression "pkgs.nvirtd";
    };
    uri = opt types.str "qemu:///system" "libvirt URI nvirtd manages.";
    instance = opt types.str "default"
      "Which nvirtd owns the VMs it defines; another instance's VMs on the same libvirt are never touched.";
    startConcurrency = opt types.ints.unsigned 0
      "Guests started at once, at most (0: as many as nvirtd's workers). Cap it where a boot storm overloads the storage or CPUs.";
    imageRetention = opt types.str "7d"
      "How long a base image no overlay uses keeps its GC root (12h, 30m, 0, or never); `nix-collect-garbage` then frees it.";
    metrics = opt (nullOr types.str) null
      "Serve Prometheus metrics at GET /metrics on unix:PATH or HOST:PORT (e.g. 127.0.0.1:9477); off when null.";
    host = opt (nullOr types.str) null
      "This host's name in a fleet's config (domains' host); null: the host name. The same domains on every host of a fleet (colmena, deploy-rs), each daemon manages those placed on it.";
    peers = opt (types.attrsOf types.str) { }
      "The fleet's other hosts and their libvirt URIs (e.g. qemu+tls://h2/system): asked (read only) before a domain placed here is first defined, so a VM never runs twice; and the destination of live migrations, which this host's libvirtd opens itself (peer to peer).";
    extraArgs = opt (types.listOf types.str) [ ] "Extra arguments for `nvirtd run`.";
    extraPackages = opt (types.listOf types.package) [ ]
      "More packages on the daemon's PATH: what a --build-command (in extraArgs) runs, or nixos-generators where the nixpkgs on NIX_PATH is older than 25.05.";
    domains = opt (types.attrsOf (types.submodule domainModule)) { } "VMs, as in /etc/nvirt.d/*.json.";
    networks = opt (types.attrsOf (types.submodule networkModule)) { } "libvirt networks.";
  };

  config = mkIf cfg.enable {
    virtualisation.libvirtd.enable = true;
    environment.etc."nvirt.d/nixos.json".source = configFile;
    environment.systemPackages = [ cfg.package ];
    # Kept equal to contrib/systemd/nvirtd.service (a test compares them), but for ExecStart's
    # options and the environment, which only NixOS knows.
    systemd.services.nvirtd = {
      description = "nvirtd: declarative VM manager for libvirt";
      wantedBy = [ "multi-user.target" ];
      wants = [ "libvirtd.service" ];
      after = [ "libvirtd.service" "virtqemud.service" "nix-daemon.service" "network-online.target" ];
      reloadTriggers = [ configFile ];
      # nix builds go through nix-daemon (the store is read-only to the service), with the
      # host's nixpkgs: its image builder (system.build.images.qemu) builds nix disks
      environment = {
        NIX_REMOTE = "daemon";
        NIX_PATH = lib.concatStringsSep ":" config.nix.nixPath;
      };
      # nix, qemu-img, ip (guests back on a restarted network's bridge), git (flakes in git)
      path = [ config.nix.package pkgs.qemu_kvm pkgs.iproute2 pkgs.git ] ++ cfg.extraPackages;
      serviceConfig = {
        Type = "notify-reload";
        ExecStart = lib.escapeShellArgs ([ "${cfg.package}/bin/nvirtd" "run" "--connect" cfg.uri "--instance" cfg.instance
          "--config-dir" "/etc/nvirt.d" "--state-dir" "/var/lib/nvirtd"
          "--start-concurrency" (toString cfg.startConcurrency) "--image-retention" cfg.imageRetention ]
          ++ lib.optionals (cfg.metrics != null) [ "--metrics" cfg.metrics ]
          ++ lib.optionals (cfg.host != null) [ "--host" cfg.host ]
          ++ lib.concatLists (lib.mapAttrsToList (name: uri: [ "--peer" "${name}=${uri}" ]) cfg.peers)
          ++ cfg.extraArgs);
        NotifyAccess = "main";
        WatchdogSec = "30s";
        Restart = "on-failure";
        RestartSec = "2s";
        TimeoutStartSec = "120s";
        TimeoutStopSec = "30s";
        # VMs are libvirtd's children: stopping nvirtd stops only nvirtd and its builds
        KillMode = "mixed";
        StateDirectory = "nvirtd";
        StateDirectoryMode = "0700";
        ConfigurationDirectory = "nvirt.d";
        ConfigurationDirectoryMode = "0755";
        ProtectSystem = "strict";
        ReadWritePaths = [ "-/var/lib/libvirt/images" "-/nix/var/nix" ];
        ProtectHome = true;
        PrivateTmp = true;
        NoNewPrivileges = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RestrictNamespaces = true;
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
        SystemCallArchitectures = "native";
        UMask = "0022";
      };
    };
  };
}
