"""Codec benchmarks: quality against bitrate (with Opus and Codec2 baselines) and speed."""
