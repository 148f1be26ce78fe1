"""Lossless compression: ANS streams driven by exact discrete models decode bit-exactly and cost their NLL."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_dgm
from ppl_dgm.cli import main
from ppl_dgm.core import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.evaluation.compression import (
    Codable,
    compress,
    decompress,
    header_size,
    is_codable,
    verify_coding,
)
from ppl_dgm.evaluation.compression_report import compressed_size_report
from ppl_dgm.validation import check_integer_levels, check_tensor


class _Symbols(GenerativeModel):
    """Shared members of the test models: data ``(N, D)`` with integer values ``0..K-1`` are the symbols."""

    capabilities = Capabilities(likelihood="exact", data="discrete")

    def __init__(self, num_dims: int = 16, num_symbols: int = 5) -> None:
        super().__init__()
        self.num_dims, self.num_symbols = num_dims, num_symbols
        self.event_shape = (num_dims,)

    def check_data(self, x: torch.Tensor) -> None:
        check_tensor(x, "x", event_shape=self.event_shape)
        check_integer_levels(x, self.num_symbols)

    def to_symbols(self, x: torch.Tensor) -> torch.Tensor:
        self.check_data(x)
        return x.long()

    def from_symbols(self, s: torch.Tensor) -> torch.Tensor:
        return s.to(self.dtype)

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        if x is None:
            raise NotImplementedError("the test models only score data")
        with data_plate(x, n):
            return pyro.sample(X, dist.Categorical(logits=self.all_logits(x.long())).to_event(1), obs=x)


class FactorizedCategorical(_Symbols):
    """Independent categorical pixels with learned logits ``(D, K)``: one coding step."""

    def __init__(self, num_dims: int = 16, num_symbols: int = 5) -> None:
        super().__init__(num_dims, num_symbols)
        self.logits = torch.nn.Parameter(torch.randn(num_dims, num_symbols))

    def all_logits(self, s: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(s.shape[0], -1, -1)

    def coding_steps(self) -> int:
        return 1

    def coding_log_probs(self, s: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        dims = torch.arange(self.num_dims, device=s.device)
        return dims, self.all_logits(s).log_softmax(-1)


class TinyAutoregressive(_Symbols):
    """``p(s_d | s_<d)``: logits from a strictly lower-triangular linear map of the one-hot symbols; D steps."""

    def __init__(self, num_dims: int = 16, num_symbols: int = 5) -> None:
        super().__init__(num_dims, num_symbols)
        self.bias = torch.nn.Parameter(torch.randn(num_dims, num_symbols))
        self.weight = torch.nn.Parameter(torch.randn(num_dims, num_symbols, num_dims, num_symbols))
        self.register_buffer("mask", torch.ones(num_dims, num_dims).tril(-1)[:, None, :, None])

    def all_logits(self, s: torch.Tensor) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(s, self.num_symbols).to(self.dtype)
        return self.bias + torch.einsum("dkel,nel->ndk", self.weight * self.mask, one_hot)

    def coding_steps(self) -> int:
        return self.num_dims

    def coding_log_probs(self, s: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([step], device=s.device), self.all_logits(s)[:, step : step + 1].log_softmax(-1)


class SquareImages(FactorizedCategorical):
    """`FactorizedCategorical` on images of shape ``(4, 4)``: symbols are the flattened pixels."""

    def __init__(self, num_symbols: int = 5) -> None:
        super().__init__(16, num_symbols)
        self.event_shape = (4, 4)

    def to_symbols(self, x: torch.Tensor) -> torch.Tensor:
        self.check_data(x)
        return x.reshape(x.shape[0], -1).long()

    def from_symbols(self, s: torch.Tensor) -> torch.Tensor:
        return s.reshape(-1, *self.event_shape).to(self.dtype)


class Noisy(FactorizedCategorical):
    """Not reproducible: other probabilities on every call (as a model run on another device might give)."""

    def coding_log_probs(self, s: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        dims, log_probs = super().coding_log_probs(s, step)
        return dims, (log_probs + torch.randn_like(log_probs)).log_softmax(-1)


class NotCodable(GenerativeModel):
    """An exact model without the coding members."""

    capabilities = Capabilities(likelihood="exact", data="discrete")

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(64, 17))

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        with data_plate(x, n):
            return pyro.sample(X, dist.Categorical(logits=self.logits).to_event(1), obs=x)


class Peeking(TinyAutoregressive):
    """Breaks the contract: its probabilities depend on symbols that are not decoded yet."""

    def coding_log_probs(self, s: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        dims, log_probs = super().coding_log_probs(s, step)
        future = s[:, (step + 1) % self.num_dims, None, None].to(log_probs.dtype)
        return dims, (log_probs + future * torch.arange(self.num_symbols, device=s.device)).log_softmax(-1)


MODELS = [FactorizedCategorical, TinyAutoregressive]


def _random(n: int, model: _Symbols, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(model.num_symbols, (n, model.num_dims), generator=generator).to(model.dtype)


def _skewed(n: int, model: _Symbols, seed: int) -> torch.Tensor:
    """Pixels drawn independently from fixed skewed per-pixel distributions."""
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(model.num_dims, model.num_symbols, generator=torch.Generator()
                                          .manual_seed(0)), -1)
    return torch.multinomial(probs.repeat(n, 1), 1, generator=generator).view(n, model.num_dims).to(model.dtype)


@pytest.mark.parametrize("cls", MODELS)
def test_round_trip_is_bit_exact(cls, device):
    model = cls().to(device)
    x = _random(50, model).to(device)
    assert isinstance(model, Codable) and is_codable(model)
    stream = compress(model, x)
    decoded = decompress(model, stream)
    assert decoded.dtype == x.dtype and decoded.shape == x.shape and decoded.device.type == device.type
    assert torch.equal(decoded, x)
    assert compress(model, x) == stream  # the probabilities are recomputed identically


@pytest.mark.parametrize("cls", MODELS)
def test_coding_log_probs_sum_to_the_exact_log_prob(cls):
    model = cls()
    x = _random(20, model)
    total = verify_coding(model, x)
    assert torch.allclose(total, model.log_prob(x).double(), atol=1e-4)


def test_verify_coding_catches_a_model_that_peeks_ahead():
    model = Peeking()
    with pytest.raises(ValueError, match="not decoded yet"):
        verify_coding(model, _random(5, model))


def test_irreproducible_probabilities_fail_loudly_not_silently():
    model = Noisy()
    x = _random(30, model)
    with pytest.raises(ValueError, match="other probabilities"):
        decompress(model, compress(model, x))


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float64])
def test_data_dtype_and_shape_are_restored(dtype):
    model = TinyAutoregressive(num_dims=6)
    x = _random(7, model).to(dtype)
    decoded = decompress(model, compress(model, x))
    assert decoded.dtype == dtype and torch.equal(decoded, x)


def test_the_event_shape_is_restored():
    model = SquareImages()
    x = _random(9, FactorizedCategorical()).view(9, 4, 4)
    stream = compress(model, x)
    assert len(stream) > header_size(3) == 60
    decoded = decompress(model, stream)
    assert decoded.shape == (9, 4, 4) and torch.equal(decoded, x)


@pytest.mark.parametrize("cls", MODELS)
def test_size_matches_the_nll(cls):
    torch.manual_seed(0)
    model = cls()
    train, test = _skewed(4000, model, seed=1), _skewed(1000, model, seed=2)
    if cls is FactorizedCategorical:  # maximum likelihood: the smoothed log frequencies
        counts = torch.nn.functional.one_hot(train.long(), model.num_symbols).sum(0) + 1.0
        with torch.no_grad():
            model.logits.copy_(counts.log())
    report = compressed_size_report(model, test)
    assert report.decoded_equal
    assert report.header_bytes == header_size(2) == 56
    assert report.total_bytes == report.header_bytes + report.payload_bits // 8
    assert 0.99 * report.nll_bits <= report.payload_bits <= 1.01 * report.nll_bits
    assert math.isclose(report.nll_bits, -model.log_prob(test).double().sum().item() / math.log(2), rel_tol=1e-6)
    assert set(report.baselines) == {"gzip", "bz2", "lzma", "png", "png_strip"}
    if cls is FactorizedCategorical:  # a model that knows the source beats general-purpose compressors
        assert report.total_bytes < min(report.baselines.values())
    assert "ANS (this stream)" in report.table()


def _stream():
    model = TinyAutoregressive()
    x = _random(40, model)
    return model, x, compress(model, x)


def test_a_corrupt_byte_is_an_error():
    model, _, stream = _stream()
    for position in (5, 30, header_size(2) + 3, len(stream) - 1):  # header fields, payload
        damaged = bytearray(stream)
        damaged[position] ^= 0x10
        with pytest.raises(ValueError, match="truncated/corrupt"):
            decompress(model, bytes(damaged))


def test_a_truncated_stream_is_an_error():
    model, _, stream = _stream()
    for size in (0, 10, header_size(2) - 1, header_size(2), len(stream) - 4, len(stream) - 1):
        with pytest.raises(ValueError, match="truncated/corrupt"):
            decompress(model, stream[:size])
    with pytest.raises(ValueError, match="truncated/corrupt"):
        decompress(model, stream + b"\0\0\0\0")


def test_not_a_stream_is_an_error():
    model, _, stream = _stream()
    with pytest.raises(ValueError, match="not a ppl_dgm compressed stream"):
        decompress(model, b"GIF89a" + stream[6:])


def test_another_model_is_an_error():
    model, _, stream = _stream()
    other = TinyAutoregressive()  # same class and configuration, other weights
    with pytest.raises(ValueError, match="another model"):
        decompress(other, stream)
    with pytest.raises(ValueError, match="another model"):
        decompress(model.double(), stream)


def test_a_model_that_cannot_be_coded_is_a_type_error():
    vae = NotCodable()
    assert not is_codable(vae)
    with pytest.raises(TypeError, match="num_symbols, to_symbols, from_symbols, coding_steps, coding_log_probs"):
        compress(vae, torch.zeros(2, 64))
    with pytest.raises(TypeError, match="lacks"):
        decompress(vae, b"")


def test_data_off_the_alphabet_are_an_error():
    model = FactorizedCategorical()
    x = _random(4, model)
    for bad, message in ((5.0, r"0\.\.4"), (-1.0, r"0\.\.4"), (0.5, "integers")):
        y = x.clone()
        y[1, 2] = bad
        with pytest.raises(ValueError, match=message):
            compress(model, y)
    with pytest.raises(ValueError, match="shape"):
        compress(model, x[:, :3])


# ----------------------------------------------------------------------------- the command line


def test_cli_round_trip(tmp_path, capsys):
    model = FactorizedCategorical(num_dims=64, num_symbols=17)
    run = ppl_dgm.save(model, tmp_path / "run")
    stream, out = tmp_path / "test.pdgc", tmp_path / "test.npy"
    assert main(["compress", str(run), "--data", "digits", "--split", "test", "-o", str(stream)]) == 0
    assert "ratio" in capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["decompress", str(run), str(stream), "-o", str(out)]) == 0
    expected = ppl_dgm.datasets.load_dataset("digits", "test").x.numpy()
    decoded = np.load(out)
    assert decoded.shape == (447, 64) and np.issubdtype(decoded.dtype, np.integer)
    assert np.array_equal(decoded, expected)

    # errors: one line on stderr, exit status 2; nothing overwritten without --force
    capsys.readouterr()
    before = stream.read_bytes()
    assert main(["compress", str(run), "--data", "digits", "--split", "val", "-o", str(stream)]) == 2
    assert "--force" in capsys.readouterr().err and stream.read_bytes() == before
    assert main(["compress", str(run), "--data", "digits", "--split", "val", "-o", str(stream), "--force"]) == 0
    assert stream.read_bytes() != before
    assert main(["decompress", str(run), str(stream), "-o", str(out)]) == 2
    stream.write_bytes(stream.read_bytes()[:-3])
    capsys.readouterr()
    assert main(["decompress", str(run), str(stream), "-o", str(tmp_path / "x.npy")]) == 2
    error = capsys.readouterr().err
    assert "truncated/corrupt" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()
    assert main(["decompress", str(tmp_path / "nothing"), str(stream), "-o", str(tmp_path / "y.npy")]) == 2


def test_cli_rejects_a_model_that_cannot_be_coded(tmp_path, capsys):
    vae = NotCodable()
    run = ppl_dgm.save(vae, tmp_path / "run")
    assert main(["compress", str(run), "--data", "digits", "-o", str(tmp_path / "f")]) == 2
    assert "lacks" in capsys.readouterr().err
