"""Builders for the audio tests: tiny real models and synthetic media with known truth.

- `build_tiny_mdx(dir)`: an MDX-Net ONNX (input `input` [B,4,dim_f,dim_t] -> same shape) that
  keeps the 250-4000 Hz band (a crude "vocals" mask), plus the metadata audio-separator needs
  to resolve it offline (download_checks.json, mdx_model_data.json keyed by MD5, vr_model_data.json).
- `build_tiny_whisper(dir)`: a random-weight CTranslate2 Whisper (recipe in FACTS.md).
- `espeak(text)`, `speech_scene(...)`: espeak-ng utterances at known times, mixed with music
  and noise at a chosen SNR.
- `write_video(path, audio, rate, ...)`: an mp4/mkv with that audio (and tiny video frames).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

TINY_MDX = "Tiny-MDX-Vocals.onnx"
MDX_DIM_F, MDX_DIM_T_SET, MDX_N_FFT = 1024, 8, 2048  # dim_t = 256 = the default segment_size


def build_tiny_mdx(directory: Path, band_hz: tuple[float, float] = (250.0, 4000.0)) -> Path:
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    hz_per_bin = 44100.0 / MDX_N_FFT
    bins = np.arange(MDX_DIM_F) * hz_per_bin
    mask = ((bins >= band_hz[0]) & (bins <= band_hz[1])).astype(np.float32)
    mask = np.broadcast_to(mask[None, None, :, None], (1, 4, MDX_DIM_F, 1)).copy()
    dim_t = 2 ** MDX_DIM_T_SET
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4, MDX_DIM_F, dim_t])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4, MDX_DIM_F, dim_t])
    init = helper.make_tensor("mask", TensorProto.FLOAT, mask.shape, mask.flatten().tolist())
    graph = helper.make_graph([helper.make_node("Mul", ["input", "mask"], ["output"])], "tiny_mdx", [inp], [out], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = directory / TINY_MDX
    onnx.save(model, str(path))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    (directory / "mdx_model_data.json").write_text(json.dumps({md5: {
        "compensate": 1.0, "mdx_dim_f_set": MDX_DIM_F, "mdx_dim_t_set": MDX_DIM_T_SET,
        "mdx_n_fft_scale_set": MDX_N_FFT, "primary_stem": "Vocals"}}))
    (directory / "vr_model_data.json").write_text("{}")
    (directory / "download_checks.json").write_text(json.dumps({
        "vr_download_list": {}, "mdx_download_list": {"MDX-Net Model: Tiny test vocals": TINY_MDX},
        "mdx_download_vip_list": {}, "demucs_download_list": {}, "mdx23c_download_list": {},
        "mdx23c_download_vip_list": {}, "roformer_download_list": {}}))
    return path


def build_tiny_whisper(out: Path, says: str | None = None, once: bool = False) -> Path:
    """A 2+2-layer, d_model 64 Whisper with random weights, converted to CTranslate2 in `out`.

    With `says` (one token of the tiny vocabulary) the decoder's last layer norm emits a constant
    aligned with that token's embedding, so every step predicts it: the model "transcribes" any
    audio as that word repeated, and a test knows what text each clip must come back with.
    With `once` as well, the decoder's layers are silenced so the next token depends only on
    the current one: any token -> the word, the word -> end of text. Every clip then comes back
    as the word once, confidently (a row the guards keep)."""
    import ctranslate2
    import torch
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    src = Path(tempfile.mkdtemp(prefix="tiny-whisper-hf-"))
    try:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(["hello world this is a tiny whisper model for tests",
                                 "the quick brown fox jumps over the lazy dog"], trainer)
        specials = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{c}|>" for c in _LANGUAGE_CODES]
                    + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                       "<|notimestamps|>"] + [f"<|{i * 0.02:.2f}|>" for i in range(1501)])
        tok.add_special_tokens(specials)
        tok.save(str(src / "tokenizer.json"))
        eot, sot = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|startoftranscript|>")
        torch.manual_seed(0)
        cfg = WhisperConfig(vocab_size=tok.get_vocab_size(), num_mel_bins=80, d_model=64, encoder_layers=2,
                            decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                            encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
                            max_target_positions=448, decoder_start_token_id=sot, eos_token_id=eot,
                            pad_token_id=eot, bos_token_id=eot, suppress_tokens=[], begin_suppress_tokens=[eot])
        net = WhisperForConditionalGeneration(cfg)
        if says is not None and once:
            word = tok.token_to_id(says)
            assert word is not None, f"{says!r} is not one token of the tiny vocabulary"
            dec = net.model.decoder
            with torch.no_grad():
                for layer in dec.layers:  # the residual stream is the input token's embedding alone
                    for lin in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                        lin.weight.zero_()
                        if lin.bias is not None:
                            lin.bias.zero_()
                dec.embed_positions.weight.zero_()
                emb = dec.embed_tokens.weight  # tied with the output projection
                emb[:, :2] = 0.0
                emb[word] = 0.0
                emb[word, 0], emb[word, 1] = 1.0, -1.0  # normalised: (+5.66, -5.66) on dims 0, 1
                emb[eot] = 0.0
                emb[eot, 1] = -4.0
                # output = (10, -5.66 * [input is the word]): logit(word) = 10 + 5.66 [word];
                # logit(eot) = 22.6 [word]; every other token's logit is 0 (its dims 0, 1 are 0)
                dec.layer_norm.weight.zero_()
                dec.layer_norm.weight[1] = 1.0
                dec.layer_norm.bias.zero_()
                dec.layer_norm.bias[0] = 10.0
        elif says is not None:
            word = tok.token_to_id(says)
            assert word is not None, f"{says!r} is not one token of the tiny vocabulary"
            with torch.no_grad():
                emb = net.model.decoder.embed_tokens.weight  # tied with the output projection
                emb[word] = torch.nn.functional.normalize(torch.randn(cfg.d_model), dim=0)
                ln = net.model.decoder.layer_norm
                ln.weight.zero_()
                ln.bias.copy_(8.0 * emb[word])
        net.save_pretrained(src)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(src)
        ctranslate2.converters.TransformersConverter(
            str(src), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(out), force=True)
        # ctranslate2 treats a Whisper as multilingual when its vocabulary holds an empty-string
        # token, and detects languages over `lang_ids`: give the tiny model both.
        conf = json.loads((out / "config.json").read_text())
        conf["lang_ids"] = [tok.token_to_id(f"<|{c}|>") for c in _LANGUAGE_CODES]
        (out / "config.json").write_text(json.dumps(conf))
        vocab = json.loads((out / "vocabulary.json").read_text())
        vocab[eot - 1] = ""  # an unused BPE merge
        (out / "vocabulary.json").write_text(json.dumps(vocab))
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return out


# ---- synthetic audio ------------------------------------------------------------------

def espeak(text: str, rate: int = 16000, speed: int = 160, voice: str = "en") -> np.ndarray:
    """espeak-ng speech as float32 at `rate`, leading/trailing silence trimmed."""
    import soundfile as sf
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "s.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", p, text], check=True, capture_output=True)
        x, sr = sf.read(p, dtype="float32")
    if x.ndim == 2:
        x = x.mean(axis=1)
    g = np.gcd(sr, rate)
    x = resample_poly(x, rate // g, sr // g).astype(np.float32)
    idx = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return x[idx[0]: idx[-1] + 1] if idx.size else x


def music(n: int, rate: int, seed: int = 0) -> np.ndarray:
    """Chords with harmonics, a bass line and percussive clicks: broadband, voiced-like, not speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    out = np.zeros(n, dtype=np.float64)
    beat = int(0.5 * rate)
    roots = [110.0, 146.8, 164.8, 130.8]
    for k in range(0, n, beat * 4):
        f0 = roots[(k // (beat * 4)) % len(roots)]
        seg = slice(k, min(n, k + beat * 4))
        for ratio in (1.0, 1.25, 1.5, 2.0):
            for h in range(1, 5):
                out[seg] += (0.5 / h) * np.sin(2 * np.pi * f0 * ratio * h * t[seg])
        out[seg] += 1.5 * np.sin(2 * np.pi * f0 / 2 * t[seg])
    for k in range(0, n, beat):
        m = min(n - k, int(0.05 * rate))
        out[k:k + m] += rng.standard_normal(m) * np.exp(-np.arange(m) / (0.01 * rate)) * 3.0
    return (out / np.abs(out).max()).astype(np.float32)


def speech_scene(lines: list[str], rate: int = 16000, *, lead_s: float = 1.5, gap_s: float = 2.0,
                 tail_s: float = 1.5, snr_db: float | None = None, background: str = "music",
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float, str]]]:
    """(mix, clean speech, truth regions) with each line at a known time.

    The background is scaled so that speech power (over the voiced spans) / background power = snr_db.
    """
    rng = np.random.default_rng(seed)
    pieces, truth, t = [np.zeros(int(lead_s * rate), np.float32)], [], lead_s
    for line in lines:
        x = 0.5 * espeak(line, rate) / 1.0
        truth.append((round(t, 3), round(t + len(x) / rate, 3), line))
        pieces += [x, np.zeros(int(gap_s * rate), np.float32)]
        t += len(x) / rate + gap_s
    pieces[-1] = np.zeros(int(tail_s * rate), np.float32)
    speech = np.concatenate(pieces)
    if snr_db is None:
        return speech.copy(), speech, truth
    n = len(speech)
    if background == "music":
        bg = music(n, rate, seed)
    elif background == "noise":
        bg = rng.standard_normal(n).astype(np.float32)
    else:
        bg = 0.5 * music(n, rate, seed) + 0.5 * rng.standard_normal(n).astype(np.float32)
    voiced = np.zeros(n, bool)
    for s, e, _ in truth:
        voiced[int(s * rate):int(e * rate)] = True
    ps = float((speech[voiced] ** 2).mean())
    pb = float((bg ** 2).mean())
    bg *= np.sqrt(ps / (pb * 10 ** (snr_db / 10.0)))
    mix = speech + bg
    peak = np.abs(mix).max()
    if peak > 0.99:
        mix, speech = mix * (0.99 / peak), speech * (0.99 / peak)
    return mix.astype(np.float32), speech.astype(np.float32), truth


def write_video(path: Path, audio: np.ndarray, rate: int, *, channels: int = 1, video: bool = True,
                codec: str = "aac", vfr: bool = False, fps: int = 10) -> Path:
    """Mux `audio` (mono float, copied to `channels`) and a tiny video track with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    dur = len(audio) / rate
    with av.open(str(path), "w") as c:
        a = c.add_stream(codec, rate=rate)
        a.layout = layout
        v = None
        if video:
            v = c.add_stream("libx264", rate=fps)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            if vfr:
                v.time_base = __import__("fractions").Fraction(1, 1000)
        fmt = "fltp"
        n, pts = 1024, 0
        for i in range(0, len(audio), n):
            blk = np.tile(audio[i:i + n][None, :].astype(np.float32), (channels, 1))
            f = av.AudioFrame.from_ndarray(blk, format=fmt, layout=layout)
            f.sample_rate, f.pts = rate, pts
            pts += blk.shape[1]
            for pk in a.encode(f):
                c.mux(pk)
        for pk in a.encode(None):
            c.mux(pk)
        if v is not None:
            frame = np.zeros((48, 64, 3), np.uint8)
            t, k = 0.0, 0
            while t < dur:
                f = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if vfr:
                    f.pts = int(t * 1000)
                    t += (0.04 if k % 3 else 0.2)  # irregular frame spacing
                else:
                    f.pts = k
                    t += 1.0 / fps
                k += 1
                for pk in v.encode(f):
                    c.mux(pk)
            for pk in v.encode(None):
                c.mux(pk)
    return path


# ---- pytest fixtures (import them into a test module to use them) ------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def audio_models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio-models")


@pytest.fixture(scope="session")
def tiny_mdx(audio_models_dir) -> Path:
    return build_tiny_mdx(audio_models_dir / "audio-separator")


@pytest.fixture(scope="session")
def tiny_whisper(audio_models_dir) -> Path:
    return build_tiny_whisper(audio_models_dir / "whisper" / "tiny-random")


@pytest.fixture(scope="session")
def hello_whisper(audio_models_dir) -> Path:
    """The tiny Whisper that hears one "hello" in every clip (kept by the guards)."""
    return build_tiny_whisper(audio_models_dir / "whisper" / "tiny-hello", says="hello", once=True)


@pytest.fixture(scope="session")
def parrot_whisper(audio_models_dir) -> Path:
    """The tiny Whisper that hears "hello" in everything (see build_tiny_whisper)."""
    return build_tiny_whisper(audio_models_dir / "whisper" / "tiny-parrot", says="hello")


@pytest.fixture()
def audio_project(project, audio_models_dir, monkeypatch):
    """A project whose models dir holds the tiny models; downloads are off (offline)."""
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(audio_models_dir))
    project.config["models"]["allow_download"] = False
    return project


def add_video(project, path: Path) -> int:
    from mikupal.ingest import add_videos

    db = project.db()
    try:
        rep = add_videos(db, [path])
        assert rep.added, rep.failed
        return rep.added[0][0]
    finally:
        db.conn.close()


AUDIO_STAGES = ("separate", "vad", "asr", "segments")


def run_stages(project, names=AUDIO_STAGES) -> dict:
    """Run stages through the project's real Runner; {stage: {"done": ok, "failed": n}}."""
    from mikupal.runner import Runner

    summary = Runner(project, list(names), devices="cpu").run()
    assert summary.status == "finished", summary.message
    return {name: {"done": st.ok, "failed": st.failed} for name, st in summary.stages.items()}
