# nvirtd as a Nix package: pkgs.callPackage ./contrib/nixos/package.nix { }
{ lib, python3Packages }:
python3Packages.buildPythonApplication {
  pname = "nvirtd";
  version = "0.1.0";
  pyproject = true;
  # the daemon and what the build reads; not a checkout's .venv, tests or benchmarks
  src = lib.cleanSourceWith {
    src = lib.cleanSource ../..;
    filter = path: _type: !(builtins.elem (baseNameOf path) [ ".venv" "tests" "bench" ".ci" ]);
  };
  build-system = [ python3Packages.setuptools ];
  dependencies = with python3Packages; [ libvirt pydantic structlog watchdog sdnotify prometheus-client pycdlib ];
  doCheck = false;  # the test suite needs a running libvirtd, QEMU and nix
  meta = {
    description = "Declarative VM manager for libvirt hosts";
    license = lib.licenses.mit;
    mainProgram = "nvirtd";
  };
}
