"""platform/ is a source root, never a package: the stdlib `platform` must win."""

import subprocess
import sys

from tests.conftest import ROOT


def test_no_platform_package_file() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_from_repo_root() -> None:
    code = ("import platform, sysconfig; "
            "print(platform.system()); print(platform.__file__); "
            "print(sysconfig.get_paths()['stdlib'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "Linux"
    assert out[1].startswith(out[2]), f"platform came from {out[1]}, not the stdlib"


def test_mlplatform_imports_from_the_source_root() -> None:
    code = "import mlplatform, platform; print(mlplatform.__file__); print(platform.system())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0].startswith(str(ROOT / "platform" / "mlplatform"))
    assert out[1] == "Linux"
