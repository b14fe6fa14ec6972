"""Extraction: batched == unbatched on tiny random models of four architectures, resume gives identical bytes,
reuse/refusal of existing stores, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from quirky.errors import QuirkyError
from quirky.extraction import open_store
from quirky.extraction.extract import ExtractSettings, extract_frame, partial_dir
from quirky.extraction.forward import forward_batch, group_by_prefix
from quirky.models.choices import encode_with_choices
from quirky.models.tiny import tiny_model, tiny_tokenizer

STATEMENTS = [
    "Grader: Alice\n\n1 + 2 = 3\n\nScore:",
    "Grader: Bob\n\n12 + 345 = 357, and then a few more words to make it long.\n\nScore:",
    "Is it?",
    "Alice thinks the movie was good. Is she right? Answer:",
    "Grader: Alice\n\n7 + 8 = 16\n\nScore:",
    "Bob: 100 + 1 = 101?",
    "Does the cat sit on the mat? Bob says",
    "8409 + 26 = 3435. Alice:",
    "8409 + 26 = 3435. Bob:",
]
CHOICES = [[" No", " Yes"], [" False", " True"], [" No", " Yes"], [" Nope", " Yes indeed"]]


def make_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": f"r{i}",
                "statement": STATEMENTS[i % len(STATEMENTS)] + " " * 0,
                "choices": CHOICES[i % len(CHOICES)],
                "label": int(rng.integers(0, 2)),
                "alice_label": int(rng.integers(0, 2)),
                "bob_label": int(rng.integers(0, 2)),
                "character": "Alice" if i % 2 == 0 else "Bob",
                "difficulty": float(i),
                "difficulty_quantile": (i + 0.5) / n,
                "template": 0,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tok():
    texts = STATEMENTS + [s + c for s in STATEMENTS for cs in CHOICES for c in cs]
    return tiny_tokenizer(texts, bos=True)


@pytest.fixture(scope="module")
def tok_nobos():
    texts = STATEMENTS + [s + c for s in STATEMENTS for cs in CHOICES for c in cs]
    return tiny_tokenizer(texts, bos=False)


def reference(model, prompts, c0, c1):
    """One example at a time, no padding, two plain forwards (prompt+choice0, prompt+choice1)."""
    hs, ps, los, fulls = [], [], [], []
    with torch.no_grad():
        for p, a, b in zip(prompts, c0, c1, strict=True):
            o0 = model(torch.tensor([p + a]), output_hidden_states=True)
            o1 = model(torch.tensor([p + b]), output_hidden_states=True)
            n = len(p)
            hs.append(torch.stack([h[0, n - 1] for h in o0.hidden_states[1:]]))
            ps.append(
                torch.stack(
                    [
                        torch.stack([h0[0, n] for h0 in o0.hidden_states[1:]]),
                        torch.stack([h1[0, n] for h1 in o1.hidden_states[1:]]),
                    ],
                    dim=1,
                )
            )
            los.append(o0.logits[0, n - 1, b[0]] - o0.logits[0, n - 1, a[0]])
            lp0, lp1 = torch.log_softmax(o0.logits[0], -1), torch.log_softmax(o1.logits[0], -1)
            f0 = sum(lp0[n - 1 + j, t] for j, t in enumerate(a))
            f1 = sum(lp1[n - 1 + j, t] for j, t in enumerate(b))
            fulls.append(f1 - f0)
    return torch.stack(hs, 1), torch.stack(ps, 1), torch.stack(los), torch.stack(fulls)


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [("llama", {}), ("mistral", {"sliding_window": 6}), ("gpt_neox", {}), ("gpt2", {})],
)
@pytest.mark.parametrize("strategy", ["packed", "duplicate"])
def test_batched_equals_unbatched(arch, overrides, strategy, tok, tok_nobos):
    tokenizer = tok_nobos if arch in ("gpt2", "gpt_neox") else tok
    model = tiny_model(arch, len(tokenizer), seed=hash(arch) % 1000, **overrides)
    df = make_frame(9)
    p, c0, c1 = encode_with_choices(tokenizer, df["statement"].tolist(), df["choices"].tolist())
    assert len({len(x) for x in p}) > 3  # padding really matters
    groups = group_by_prefix(p, list(range(len(p))))
    assert max(len(m) for m, _ in groups) >= 2  # prefix sharing really happens
    h, pr, lo, full = reference(model, p, c0, c1)
    res = forward_batch(model, p, c0, c1, pad_id=0, strategy=strategy, full_log_odds=True)
    torch.testing.assert_close(res.hiddens, h, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.pairs, pr, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.lm_log_odds, lo, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.lm_log_odds_full, full, atol=1e-5, rtol=1e-4)
    # the two choices' pair states differ (they are not the same token, nor does one see the other)
    assert (res.pairs[:, :, 0] - res.pairs[:, :, 1]).abs().amax() > 1e-2


def test_store_matches_reference_in_row_order(tmp_path, tok):
    model = tiny_model("llama", len(tok), seed=3)
    df = make_frame(11)
    settings = ExtractSettings(batch_size=3, chunk_size=4, storage_dtype="float32", full_log_odds=True)
    store = extract_frame(
        model, tok, df, tmp_path / "s", source={"test": 1}, settings=settings, progress=False
    )
    p, c0, c1 = encode_with_choices(tok, df["statement"].tolist(), df["choices"].tolist())
    h, pr, lo, full = reference(model, p, c0, c1)
    torch.testing.assert_close(store.hiddens(), h, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(store.pairs(layers=[2, 0]), pr[[2, 0]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(store.lm_log_odds(), lo, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(store.lm_log_odds(full=True), full, atol=1e-5, rtol=1e-4)
    assert store.meta["id"].tolist() == df["id"].tolist()
    assert store.meta["label"].tolist() == df["label"].tolist()
    assert (store.num_layers, store.hidden_size, store.n) == (3, 32, 11)
    assert store.config["runtime"]["resolved_strategy"] == "packed"
    assert not partial_dir(tmp_path / "s").exists()


def test_float16_storage_default(tmp_path, tok):
    model = tiny_model("gpt2", len(tok), seed=4)
    df = make_frame(5)
    store = extract_frame(model, tok, df, tmp_path / "s", source={}, progress=False)
    assert store.storage_dtype == "float16"
    p, c0, c1 = encode_with_choices(tok, df["statement"].tolist(), df["choices"].tolist())
    h, _, lo, _ = reference(model, p, c0, c1)
    torch.testing.assert_close(store.hiddens(), h.half().float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(store.lm_log_odds(), lo, atol=1e-5, rtol=1e-4)  # float32 always


class Interrupt(Exception):
    pass


def _files(d):
    return {f.name: f.read_bytes() for f in sorted(d.iterdir())}


def test_resume_is_byte_identical(tmp_path, tok):
    model = tiny_model("gpt_neox", len(tok), seed=5)
    df = make_frame(13)
    settings = ExtractSettings(batch_size=2, chunk_size=3)
    full = extract_frame(
        model, tok, df, tmp_path / "full", source={"x": 1}, settings=settings, progress=False
    )

    def stop_after_two(i):
        if i == 1:
            raise Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        extract_frame(
            model, tok, df, out, source={"x": 1}, settings=settings, progress=False, on_chunk=stop_after_two
        )
    scratch = partial_dir(out)
    assert not out.exists()
    assert sorted(f.name for f in scratch.glob("chunk-*")) == [
        "chunk-00000.safetensors",
        "chunk-00001.safetensors",
    ]
    (scratch / ".chunk-00002.safetensors.abc.tmp").write_bytes(b"half-written")  # as after a hard kill
    seen = []
    # A different batch size on resume is overridden by the interrupted run's own (so bytes match).
    resumed = extract_frame(
        model,
        tok,
        df,
        out,
        source={"x": 1},
        settings=ExtractSettings(batch_size=5, chunk_size=3),
        progress=False,
        on_chunk=seen.append,
    )
    assert seen == [2, 3, 4]  # only the missing chunks were computed
    assert not scratch.exists()
    assert resumed.fingerprint == full.fingerprint
    assert _files(out) == _files(tmp_path / "full")


def test_reuse_and_refuse(tmp_path, tok):
    model = tiny_model("llama", len(tok), seed=6)
    df = make_frame(6)
    out = tmp_path / "s"
    first = extract_frame(model, tok, df, out, source={"x": 1}, progress=False)
    calls = []
    again = extract_frame(model, tok, df, out, source={"x": 1}, progress=False, on_chunk=calls.append)
    assert calls == [] and again.fingerprint == first.fingerprint  # reused, nothing recomputed
    # batch size is a runtime setting: same fingerprint, reused
    extract_frame(
        model, tok, df, out, source={"x": 1}, settings=ExtractSettings(batch_size=1), progress=False
    )
    with pytest.raises(QuirkyError, match="different extraction"):
        extract_frame(model, tok, df.iloc[:5], out, source={"x": 1}, progress=False)
    with pytest.raises(QuirkyError, match="different extraction"):
        extract_frame(model, tok, df, out, source={"x": 2}, progress=False)
    other = extract_frame(model, tok, df.iloc[:5], out, source={"x": 1}, progress=False, overwrite=True)
    assert other.n == 5 and open_store(out).n == 5
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("x")
    with pytest.raises(QuirkyError, match="not an activation store"):
        extract_frame(model, tok, df, junk, source={}, progress=False)


def test_errors_leave_nothing(tmp_path, tok):
    model = tiny_model("llama", len(tok), seed=7)
    df = make_frame(4)
    out = tmp_path / "s"
    with pytest.raises(QuirkyError, match="lack the column"):
        extract_frame(model, tok, df.drop(columns=["choices"]), out, source={}, progress=False)
    with pytest.raises(QuirkyError, match="no examples"):
        extract_frame(model, tok, df.iloc[:0], out, source={}, progress=False)
    same = df.copy()
    same["choices"] = [[" Yes", " Yes please"]] * len(df)
    with pytest.raises(QuirkyError, match="start with the same token"):
        extract_frame(model, tok, same, out, source={}, progress=False)
    # a prompt longer than the context (128 positions)
    long = df.copy()
    long.loc[1, "statement"] = "word " * 200 + "Score:"
    with pytest.raises(QuirkyError, match="do not fit the model's context of 128"):
        extract_frame(model, tok, long, out, source={}, progress=False)
    assert not out.exists() and not partial_dir(out).exists()
    store = extract_frame(
        model, tok, long, out, source={}, settings=ExtractSettings(truncate=True), progress=False
    )
    assert store.config["runtime"]["truncated_prompts"] == 1
    # NaN activations: a model whose weights are NaN
    bad = tiny_model("llama", len(tok), seed=7)
    with torch.no_grad():
        bad.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))
    out2 = tmp_path / "nan"
    with pytest.raises(QuirkyError, match="NaN or inf"):
        extract_frame(bad, tok, df, out2, source={}, progress=False)
    assert not out2.exists() and not partial_dir(out2).exists()
    with pytest.raises(QuirkyError, match="batch size"):
        extract_frame(model, tok, df, out2, source={}, settings=ExtractSettings(batch_size=0), progress=False)


def test_setting_overflow_and_store_json(tmp_path, tok):
    model = tiny_model("gpt2", len(tok), seed=8)
    df = make_frame(3)
    store = extract_frame(model, tok, df, tmp_path / "s", source={"m": "tiny"}, progress=False)
    info = json.loads((tmp_path / "s" / "store.json").read_text())
    assert info["complete"] is True and info["fingerprint"] == store.fingerprint
    assert info["config"]["source"] == {"m": "tiny"}
    assert store.mask("A").tolist() == [True, False, True]


def test_group_by_prefix():
    prompts = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9], [7, 8], [1, 2, 3, 4, 6], [1, 2, 3, 4]]
    groups = group_by_prefix(prompts, list(range(6)))
    # token order: [1,2,3,4](0) [1,2,3,4](5) [1,2,3,4,6](4) [1,2,3,5](1) [1,2,9](2) [7,8](3)
    # 0 and 5 share 3 tokens (capped so each keeps its own last token); 4 shares 3 too (row 3+3+3+4 = 13 <= 2*7);
    # 1 would make the row 16 > 2*6, so it starts a group, which 2 joins (2 shared >= half of 3 tokens);
    # 3 shares nothing.
    assert groups == [([0, 5, 4], 3), ([1, 2], 2), ([3], 0)]
    assert group_by_prefix(prompts, [0, 5, 4], max_members=2) == [([0, 5], 3), ([4], 0)]
    assert group_by_prefix(prompts, [0, 1], min_shared=4) == [([0], 0), ([1], 0)]
    # a short shared prefix of long prompts is not worth packing
    long = [[1, 2, *range(10, 30)], [1, 2, *range(40, 60)]]
    assert group_by_prefix(long, [0, 1]) == [([0], 0), ([1], 0)]
    assert group_by_prefix(long, [0, 1], min_fraction=0.0, max_growth=3.0) == [([0, 1], 2)]


def _run(argv, capsys):
    from quirky.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_extract_and_info(tmp_path, capsys):
    from quirky.datasets import build_dataset, load_templated

    ds = tmp_path / "ds"
    build_dataset("addition", ds, seed=0, n_train=8, n_val=10, n_test=8)
    texts = [s + c for s in load_templated(ds, "validation")["statement"] for c in (" False", " True")]
    tok = tiny_tokenizer(texts + [str(i) for i in range(100)], bos=True)
    model_dir = tmp_path / "tiny"
    tiny_model("llama", len(tok), seed=9).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "st"
    argv = [
        "extract",
        "--model",
        str(model_dir),
        "--dataset",
        str(ds),
        "--out",
        str(out),
        "--batch-size",
        "4",
    ]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0 and "n=10" in stdout
    store = open_store(out)
    assert (store.n, store.num_layers, store.hidden_size) == (10, 3, 32)
    assert store.config["source"]["dataset"]["name"] == "addition"
    assert store.config["source"]["model"]["model"]["kind"] == "local"
    code, stdout, _ = _run(["extract", "info", str(out)], capsys)
    assert code == 0 and store.fingerprint in stdout and "hiddens [3, 10, 32]" in stdout
    assert "AE" in stdout and "BH" in stdout
    # reuse: same command, same fingerprint, nothing recomputed
    code, stdout, _ = _run(argv, capsys)
    assert code == 0 and store.fingerprint in stdout
    # errors: one line on stderr, exit 2, nothing written
    for bad, message in [
        (["extract", "--dataset", str(ds), "--out", str(tmp_path / "x")], "needs --model"),
        ([*argv[:-4], "--split", "bogus", "--out", str(tmp_path / "x")], "unknown split"),
        (
            [
                "extract",
                "--model",
                str(model_dir),
                "--dataset",
                str(tmp_path / "nods"),
                "--out",
                str(tmp_path / "x"),
            ],
            "does not exist",
        ),
        (["extract", "info", str(tmp_path / "x")], "does not exist"),
    ]:
        code, _, err = _run(bad, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x").exists()
