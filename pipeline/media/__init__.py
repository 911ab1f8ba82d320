"""The media layer: the only code that opens audio/video files (PyAV).

probe.py   what a file holds, THE CLOCK (0 = first presented frame/sample), audio track choice
audio.py   audio decode/down-mix/resample to WAV or to arrays, on that clock
frames.py  pictures as shown (rotation + SAR applied), the frame on screen at t
encode.py  H.264 + AAC MP4 writing (utterance clips, the demo clip)
The atomic file write lives in mikupal.fileutil.atomic_write.
"""
from .audio import (ASR_CHANNELS, ASR_RATE, SEP_CHANNELS, SEP_RATE, AudioTrack, decode_span, extract_audio,
                    iter_audio_blocks, read_audio, resampler, wav_info, write_wav)
from .encode import write_mp4
from .frames import DecodeStats, Frame, VideoReader, fit_width, grid_indices, iter_frames, merge_spans
from .probe import (AUDIO_SUFFIXES, VIDEO_SUFFIXES, AudioTrackInfo, MediaError, NoVideoError, ProbeInfo,
                    audio_tracks, clock_origin, open_input, probe, select_audio)

__all__ = [
    "ASR_CHANNELS", "ASR_RATE", "SEP_CHANNELS", "SEP_RATE", "AUDIO_SUFFIXES", "VIDEO_SUFFIXES",
    "AudioTrack", "AudioTrackInfo", "DecodeStats", "Frame", "MediaError", "NoVideoError", "ProbeInfo", "VideoReader",
    "audio_tracks", "clock_origin", "decode_span", "extract_audio", "fit_width", "grid_indices",
    "iter_audio_blocks", "iter_frames", "merge_spans", "open_input", "probe", "read_audio", "resampler",
    "select_audio", "wav_info", "write_mp4", "write_wav",
]
