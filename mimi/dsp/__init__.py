"""Signal processing in plain torch (torchaudio is not usable here): STFT magnitudes, mel filterbanks."""

from mimi.dsp.mel import MelSpectrogram, mel_filterbank, stft_magnitude

__all__ = ["MelSpectrogram", "mel_filterbank", "stft_magnitude"]
