"""The camera/source spec strings users type, documented once.

Kept apart from `appliance.capture` (which loads OpenCV) so `--help`, `status` and
`config check` answer instantly on a Pi.
"""

SOURCE_SPECS_HELP = """\
auto           Pi camera if present, else Intel RealSense, else /dev/video0
picamera       Raspberry Pi CSI camera (needs python3-picamera2 from apt)
realsense      Intel RealSense colour stream (needs pyrealsense2)
v4l2:N         USB/V4L2 camera number N, e.g. v4l2:0
/dev/videoN    the same, by device path (any /dev/... path works)
rtsp://...     a network camera (RTSP, or http(s):// MJPEG/HLS), reconnected when it drops
demo           the bundled demo clip (appliance/data/demo_faces.mp4)
PATH/TO/DIR    a folder of .jpg/.jpeg/.png/.bmp images, played in name order
PATH/TO/FILE   a video file (anything OpenCV/FFmpeg can decode)"""
