"""Backbone: text front end, tokenizer, delay pattern, training, generation guards and batching."""
from __future__ import annotations

import ast
import json
import random

import numpy as np
import pytest
import torch

from backbone.delay import delay, loss_mask, undelay
from backbone.generate import BatchGenerator, Request, SamplingConfig, frame_bounds, generate_batch, generate_frames
from backbone.model import AlignmentGuide, Backbone, BackboneConfig, load_backbone, save_backbone
from backbone.tokenizer import TextTokenizer
from tts.text import normalize_text


@pytest.mark.parametrize("written, spoken", [
    ("Dr. Smith paid $12.50.", "doctor smith paid twelve dollars and fifty cents."),
    ("It costs $1.5 million.", "it costs one point five million dollars."),
    ("Pay in $ or €, US$3 at most.", "pay in dollars or euros, u s three dollars at most."),
    ("We met at 9:00 a.m. Then left.", "we met at nine eh m. then left."),
    ("Call at 7:05 or 10:30 PM.", "call at seven oh five or ten thirty p m."),
    ("On 2024-03-05 it rained.", "on march fifth twenty twenty-four it rained."),
    ("Born Jan. 5, 1950.", "born january fifth, nineteen fifty."),
    ("He came 21st in the 1980s.", "he came twenty-first in the nineteen eighties."),
    ("Pi is 3.14 and 45% agree.", "pi is three point one four and forty-five percent agree."),
    ("We sold 1,234 units.", "we sold one thousand two hundred and thirty-four units."),
    ("The FBI met NASA.", "the f b i met nasa."),
    ("The CPUs are fast.", "the c p u s are fast."),
    ("See https://example.com/docs now.", "see example dot com slash docs now."),
    ("Mail john.doe@example.org today.", "mail john dot doe at example dot org today."),
    ("Cats & dogs, etc.", "cats and dogs, et cetera."),
    ("I said no. Then No. 5 came.", "i said no. then number five came."),
    ("It was -5° outside.", "it was minus five degrees outside."),
    ("Gordon (1833-70) wrote in 1914-18.",
     "gordon, eighteen thirty-three to seventy, wrote in nineteen fourteen to eighteen."),
    ("Read pages 10 - 20; they won 3-2.", "read pages ten to twenty; they won three to two."),
    ("Call 555-123-4567 about a 9-year-old.",
     "call five five five, one two three, four five six seven about a nine-year-old."),
    ("Agent 007's zip is 02139, see RHSA-1999:030-01.",
     "agent zero zero seven's zip is zero two one three nine, see r h s eh-nineteen ninety-nine: "
     "zero three zero-zero one."),
    ("Songs of the 1920's and 80's on MP3 and Linux8086.",
     "songs of the nineteen twenties and eighties on m p three and linux eight thousand and eighty-six."),
    ("It weighs 5kg, 1 km away at 60 mph and 21°C; 50GB at 14.4kbps.",
     "it weighs five kilograms, one kilometer away at sixty miles per hour and twenty-one degrees celsius; "
     "fifty gigabytes at fourteen point four kilobits per second."),
    ("Add 2½ cups, 3/4 cup and 1/2 tsp, open 24/7 since 12/25/2024.",
     "add two and one half cups, three quarters cup and one half of a teaspoon, open twenty-four seven since "
     "december twenty-fifth twenty twenty-four."),
    ("We have 1.5M users and 2bn rows, in flat 4B on a 4K screen.",
     "we have one point five million users and two billion rows, in flat four b on a four k screen."),
    ("Play it x2 or x1.5 on x86; 10^3 is 1e3 and x^-2 is small.",
     "play it times two or times one point five on x eighty-six; ten to the power of three is one e three and x to "
     "the power of minus two is small."),
    ("Henry VIII saw World War II, not Malcolm X; I am 3x faster on a 4x4 at 3:2.",
     "henry the eighth saw world war two, not malcolm x; i am three times faster on a four by four at three to two."),
    ("Pope John Paul II met King Zog II and Louis XIV; Rocky III and Final Fantasy VII; a 60 W bulb uses 60 W.",
     "pope john paul the second met king zog the second and louis the fourteenth; rocky three and final fantasy "
     "seven; a sixty watt bulb uses sixty watts."),
    ("Do you like TENDER VITTLES in Rocky IIII?", "do you like tender vittles in rocky i i i i?"),
    ("Python 3.12.1 at 192.168.0.1 since 31.12.1999, in F# minor, 5 ± 1 on Tue., Jan. 5.",
     "python three point twelve point one at one nine two dot one six eight dot zero dot one since december "
     "thirty-first nineteen ninety-nine, in f sharp minor, five plus or minus one on tuesday, january fifth."),
    ("Call 911 from Apt. 4B, St. Paul St., in 1066 and WWII, open 24h.",
     "call nine one one from apartment four b, saint paul street, in ten sixty-six and world war two, open "
     "twenty-four hours."),
    ("STOP THE CAR: the FBI, HTML, NEWS at ESPN and the NYPD; BASIC on UNIX.",
     "stop the car: the f b i, h t m l, news at e s p n and the n y p d; basic on unix."),
    ("Call (555) 123-4567 or see example.com/help on 3/15: -$23.50 (incl. tax), ran 3h 45m, from 1/2.",
     "call five five five, one two three, four five six seven or see example dot com slash help on march "
     "fifteenth: minus twenty-three dollars and fifty cents, including tax, ran three hours forty-five minutes, "
     "from one half."),
    ("Mr Smith, 5'10\", paid USD 50 or $10-$20 at 10am-2pm, .5 of it.",
     "mister smith, five foot ten, paid fifty dollars or ten dollars to twenty dollars at ten eh m to two p m, "
     "point five of it."),
    ("The U.S. Navy paid £5m and $2bn to a Ph.D. in the U.K.",
     "the u s navy paid five million pounds and two billion dollars to a p h d in the u k."),
    ("On Mon, Dec 7th, as of 12/06, 06/12 or 02/04, call 555.123.4567; he is 6ft 2in, 1in more, in 2 in. "
     "Sun, May I go?",
     "on monday, december seventh, as of december sixth, june twelfth or february fourth, call five five five, "
     "one two three, four five six seven; he is six feet two inches, one inch more, in two in. sun, may i go?"),
    ("It costs €15.99/month or $150/yr, 2/day; rated 4.5/5 stars, 9/10 stars, rated 8/10; 3/4 of it.",
     "it costs fifteen euros and ninety-nine cents per month or one hundred and fifty dollars per year, two per "
     "day; rated four point five out of five stars, nine out of ten stars, rated eight out of ten; three quarters "
     "of it."),
    ("Your PIN is 4821, code: 123456. Go to Settings > Privacy; 5 > 3. Open Mon-Fri, Sat.-Sun. in Bldg. 7, "
     "Intel Corp., Co., etc., the end.",
     "your pin is four eight two one, code: one two three four five six. go to settings, then privacy; five "
     "greater than three. open monday to friday, saturday to sunday in building seven, intel corporation, "
     "company, et cetera, the end."),
    ("Stream 1080p or 720p, not 480i, to 720 people.",
     "stream ten eighty p or seven twenty p, not four eighty i, to seven hundred and twenty people."),
    ("Update to v1.2.3456, version 2.10.1 or release 3.0.12; give 5 mg/kg, 1 mg/kg at 100 km/h.",
     "update to version one point two point three thousand four hundred and fifty-six, version two point ten "
     "point one or release three point zero point twelve; give five milligrams per kilogram, one milligram per "
     "kilogram at one hundred kilometers per hour."),
    ("Press * then # to continue, or dial *72. Follow #MeToo; order #A12345 is #1 in C#, the '80s and 80's.",
     "press star then pound to continue, or dial star seventy-two. follow hashtag metoo; order number eh one two "
     "three four five is number one in c sharp, the eighties and eighties."),
    ("Order #48213 arrives Tue 12/8; call 1-800-555-0199 or +1 (555) 123-4567. Code XK7-99P, ref "
     "INV-2026-0042, an RSX-11M, COVID-19.",
     "order number four eight two one three arrives tuesday december eighth; call one, eight hundred, five five "
     "five, zero one nine nine or one, five five five, one two three, four five six seven. code x k seven, "
     "ninety-nine p, ref i n v, two zero two six, zero zero four two, an r s x, eleven m, covid-nineteen."),
    ("Open 9:00–17:00 in Rm. 4B on the 3rd fl. He ran it in 3:45:12, at 10:30:15. Add 1 1/2 cups and 3/4 tsp; "
     "I'd rate it 4/5. Sales grew 12% YoY.",
     "open nine o'clock to seventeen hundred in room four b on the third floor. he ran it in three hours, "
     "forty-five minutes and twelve seconds, at ten thirty and fifteen seconds. add one and one half cups and "
     "three quarters of a teaspoon; i'd rate it four out of five. sales grew twelve percent year over year."),
    ("Order #A-99812 shipped; tracking 1Z999AA10123456784. Your code is 482-913. Apt 5C, Ste 200. #Go-Team, "
     "#B12, H2SO4, an RTX4090.",
     "order number eh, nine nine eight one two shipped; tracking one z nine nine nine eh eh one zero one two three "
     "four five six seven eight four. your code is four eight two, nine one three. apartment five c, suite two "
     "hundred. hashtag go-team, number b twelve, h two s o four, an r t x four zero nine zero."),
    ("Café “naïve” — déjà vu…", "cafe naive, deja vu..."),
])
def test_front_end_speaks_written_forms(written, spoken):
    assert normalize_text(written) == spoken


def test_front_end_reads_numbers_too_long_for_words_digit_by_digit():
    # Python's int() refuses more than 4 300 digits, num2words very large numbers: neither may reach the user.
    assert normalize_text("1" * 5000) == " ".join(["one"] * 5000)
    assert normalize_text("Pay $12345678901234567 now.") == (
        "pay one two three four five six seven eight nine zero one two three four five six seven dollars now.")
    assert normalize_text("The 1234567890123456789th.") == "the " + " ".join(
        "one two three four five six seven eight nine zero one two three four five six seven eight nine".split()) + "."
    assert normalize_text("1/" + "9" * 5000) == "one " + " ".join(["nine"] * 5000)


def test_front_end_drops_unsupported_characters_with_a_warning(caplog):
    assert normalize_text("hello 日本 world") == "hello world"
    assert "dropped unsupported characters" in caplog.text and "日" in caplog.text


def test_shipped_tokenizer_round_trip():
    tok = TextTokenizer()
    for text in ["Hello there, how are you?", "Dr. Smith paid $12.50 on March 3rd.", "x"]:
        ids = tok.encode(text)
        assert ids and all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == normalize_text(text)


@pytest.mark.parametrize("k, frames", [(1, 5), (4, 1), (4, 30), (8, 3)])
def test_delay_pattern_is_invertible(k, frames):
    codes = torch.randint(0, 100, (k, frames))
    delayed = delay(codes, pad=100, eos=101)
    assert delayed.shape == (k, frames + k)
    assert torch.equal(undelay(delayed), codes)
    mask = loss_mask(frames, k)
    assert int(mask.sum()) == k * (frames + 1)                        # every code and one EOS per stream
    assert (delayed[mask] != 100).all() and (delayed[~mask] == 100).all()
    assert all(delayed[j, frames + j] == 101 for j in range(k))


TINY = dict(text_vocab=20, n_codebooks=3, card=12, d_model=48, n_layers=2, n_heads=2, ffn=96, speaker_dim=8,
            frame_rate=25.0)


def tiny_model(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(BackboneConfig(**TINY))


def test_tiny_model_overfits_and_reproduces_its_fixture(tmp_path):
    """Teacher forcing learns two utterances; greedy generation then speaks them back, frame for frame."""
    torch.manual_seed(0)
    spk = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    text = [torch.tensor([1, 5, 7, 3]), torch.tensor([2, 9, 4, 4, 6])]
    codes = [torch.randint(0, 12, (3, 10)), torch.randint(0, 12, (3, 7))]
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        out = model(spk, text, codes)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["accuracy"] == 1.0
    save_backbone(model, tmp_path / "b.safetensors")
    greedy = SamplingConfig(temperature=0.0, min_seconds_per_char=0.0)
    for inference_only in (False, True):   # with LlamaModel, and with its weights alone (as the engine loads)
        model = load_backbone(tmp_path / "b.safetensors", inference_only)
        for i in range(2):
            got = torch.stack(list(generate_frames(model, Request(text[i].tolist(), spk[i], n_chars=20,
                                                                  sampling=greedy))), 1)
            assert torch.equal(got, codes[i])                          # stopped at its end-of-speech


def test_inference_weights_mirror_llama_and_the_prefill_computes_what_it_computes():
    """A backbone loaded for inference holds LlamaModel's parameters under LlamaModel's names (no transformers
    code), and the step model's prefill gives LlamaModel's keys, values and next-step logits."""
    model = tiny_model(5).eval()
    light = Backbone(model.config, inference_only=True)
    assert {k: v.shape for k, v in light.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    light.load_state_dict(model.state_dict())
    prompt = model.embed_prompt(torch.randn(1, 8), torch.tensor([[1, 4, 2, 7, 3, 3, 9]]))
    out = model.transformer(inputs_embeds=prompt, use_cache=True)
    expected = model.logits(out.last_hidden_state[:, -1:])[0, :, 0]
    step = light.step_model()
    cache = step.new_cache()
    got = step.prefill(prompt[0], cache)
    scale = expected.abs().max()
    assert (got - expected).abs().max() < 1e-5 * scale
    n = prompt.shape[1]
    assert int(cache.lengths[0]) == n
    for i, layer in enumerate(out.past_key_values.layers):
        assert torch.allclose(cache.keys[i, 0, :, :n], layer.keys[0], atol=1e-5)
        assert torch.allclose(cache.values[i, 0, :, :n], layer.values[0], atol=1e-5)
    with pytest.raises(RuntimeError, match="inference only"):
        light(torch.randn(1, 8), [torch.tensor([1])], [torch.zeros(3, 2, dtype=torch.long)])


def test_generation_stops_at_the_length_bound():
    model = tiny_model()
    with torch.no_grad():  # make EOS impossible to choose: only the bound can end it
        model.heads.bias.view(3, -1)[0, model.config.eos] = -1e4
    sampling = SamplingConfig(max_seconds_per_char=0.1, extra_seconds=0.2)
    lo, hi = frame_bounds(8, 25.0, sampling)
    frames = list(generate_frames(model, Request([1, 2, 3], torch.zeros(8), n_chars=8, seed=3, sampling=sampling)))
    assert len(frames) == hi == 25 * (0.8 + 0.2) and all(f.shape == (3,) for f in frames)
    assert all(int(f.max()) < 12 for f in frames)                      # never PAD/BOS/EOS inside audio


def test_eos_is_not_allowed_before_the_minimum_length():
    model = tiny_model()
    with torch.no_grad():  # EOS is the model's favourite: the minimum must still hold
        model.heads.bias.view(3, -1)[0, model.config.eos] = 1e4
    sampling = SamplingConfig(min_seconds_per_char=0.1)
    frames = list(generate_frames(model, Request([1, 2], torch.zeros(8), n_chars=10, sampling=sampling)))
    assert len(frames) == frame_bounds(10, 25.0, sampling)[0] == 25


@pytest.mark.parametrize("onnx", [False, True])
def test_batched_generation_equals_one_by_one_and_requests_can_join_and_leave(onnx):
    torch.manual_seed(1)   # a model that allows guidance: guided requests (two cache rows) sit beside plain ones
    model = Backbone(BackboneConfig(**TINY, unconditional=True)).eval()
    reqs = [Request(list(range(1, 3 + 3 * i)), torch.randn(8), n_chars=6 + 4 * i, seed=10 + i,
                    sampling=SamplingConfig(guidance=(1.0, 2.5)[i % 2])) for i in range(4)]
    alone = [torch.stack(list(generate_frames(model, r, onnx=onnx)), 1) for r in reqs]
    together = generate_batch(model, reqs, onnx=onnx)
    for a, b in zip(alone, together):
        assert torch.equal(a, b)
    if onnx:   # the same tokens as PyTorch's steps
        assert all(torch.equal(a, torch.stack(list(generate_frames(model, r)), 1)) for a, r in zip(alone, reqs))
    # Join mid-flight: the last two requests enter after a few steps of the first two.
    for got, expected in zip(joining_mid_flight(model, reqs, first=2, join_at=3, max_steps=200, onnx=onnx), alone):
        assert torch.equal(got, expected)


def joining_mid_flight(model: Backbone, reqs: list[Request], first: int, join_at: int, max_steps: int,
                       onnx: bool = False) -> list[torch.Tensor]:
    """Generate `reqs` in one batch, the first `first` from the start and the rest joining at step `join_at`;
    each request's codes [K, F], in order."""
    batch = BatchGenerator(model, onnx=onnx)
    ids = [batch.add(r) for r in reqs[:first]]
    out: dict[int, list] = {}
    for n in range(max_steps):
        if n == join_at:
            ids += [batch.add(r) for r in reqs[first:]]
        if not batch.active:
            break
        for row, (frames, _) in batch.step().items():
            out.setdefault(row, []).extend(frames)
    return [torch.stack(out[row], 1) for row in ids]


def test_guidance_weight_zero_is_the_unconditional_model_and_others_differ():
    torch.manual_seed(7)
    model = Backbone(BackboneConfig(**TINY, unconditional=True)).eval()
    text, speaker = [3, 1, 4, 1, 5], torch.randn(8)

    def frames(ids, spk, guidance, temperature=0.0):
        sampling = SamplingConfig(temperature=temperature, guidance=guidance, max_seconds_per_char=0.05)
        return torch.stack(list(generate_frames(model, Request(ids, spk, n_chars=20, sampling=sampling))), 1)

    assert torch.equal(frames(text, speaker, 0.0), frames([], torch.zeros(8), 1.0))
    assert not torch.equal(frames(text, speaker, 1.0, 1.0), frames(text, speaker, 30.0, 1.0))
    with pytest.raises(ValueError, match="guidance"):
        frames(text, speaker, -1.0)


def test_cancel_frees_the_row_and_seeds_are_deterministic():
    model = tiny_model(2).eval()
    r = Request([1, 2, 3], torch.randn(8), n_chars=12, seed=5)
    assert torch.equal(torch.stack(list(generate_frames(model, r)), 1), torch.stack(list(generate_frames(model, r)), 1))
    batch = BatchGenerator(model)
    a, b = batch.add(r), batch.add(Request([4, 5], torch.randn(8), n_chars=12, seed=6))
    batch.step()
    batch.cancel(a)
    assert batch.active == 1 and all(row.id == b for row in batch.rows)
    with pytest.raises(ValueError, match="too long"):
        batch.add(Request([1] * 3000, torch.randn(8), n_chars=9000))


def test_alignment_guide_prefers_a_diagonal_over_other_alignments():
    """The penalty is lowest for attention that walks the text in step with the audio."""
    guide = AlignmentGuide(layers=(0,), heads=1, sigma=0.2)
    n, s = 6, 12
    length = 1 + n + s

    def penalty(attend_to) -> float:
        a = torch.zeros(1, 1, length, length)
        for q in range(s):
            a[0, 0, 1 + n + q, attend_to(q)] = 1.0
        return float(guide.penalty((a,), [n], [s], [length]))

    diagonal = penalty(lambda q: 1 + int(q / s * n))
    backwards = penalty(lambda q: 1 + n - 1 - int(q / s * n))
    stuck = penalty(lambda q: 1)
    audio_only = penalty(lambda q: 1 + n + q)          # ignores the text altogether
    assert diagonal < 0.1 < stuck < audio_only == 1.0 and backwards > stuck * 0.9


def _tiny_cache(path) -> None:
    from backbone.data import _save

    rng = np.random.default_rng(0)
    codes = [rng.integers(0, 12, (3, int(rng.integers(5, 15)))).astype(np.int16) for _ in range(12)]
    text = [rng.integers(0, 20, int(rng.integers(3, 8))).astype(np.int32) for _ in range(12)]
    meta = {"codec_id": "c", "tokenizer_id": "t", "encoder_id": "e", "n_codebooks": 3, "frame_rate": 25.0,
            "utterances": 12, "hours": 0.0}
    _save(path, dict(
        ids=np.array([f"u{i}" for i in range(12)]), speakers=np.array([f"s{i % 3}" for i in range(12)]),
        splits=np.array(["train"] * 10 + ["valid"] * 2), texts=np.array(["x"] * 12),
        codes=np.concatenate(codes, 1), code_offsets=np.cumsum([0] + [c.shape[1] for c in codes]),
        text=np.concatenate(text), text_offsets=np.cumsum([0] + [len(t) for t in text]),
        speaker_names=np.array(["s0", "s1", "s2"]),
        speaker_embeddings=rng.standard_normal((3, 2, 8)).astype(np.float32),
        meta=np.array(repr(meta))))


def test_backbone_training_resumes_and_exports(tmp_path):
    """A real (tiny) run on a synthetic token cache: checkpoint, resume, export, validation logged."""
    from backbone.train import BackboneTrainConfig, train_backbone

    _tiny_cache(tmp_path / "tokens.npz")
    model = {k: v for k, v in TINY.items() if k not in ("n_codebooks", "speaker_dim", "frame_rate")}
    cfg = BackboneTrainConfig(cache=str(tmp_path / "tokens.npz"), out_dir=str(tmp_path / "run"),
                              export=str(tmp_path / "b.safetensors"), steps=4, frames_per_batch=60, valid_every=2,
                              log_every=1, warmup_steps=1, model=model)
    assert train_backbone(cfg)["step"] == 4
    cfg.steps = 6
    assert train_backbone(cfg)["step"] == 6
    loaded = load_backbone(tmp_path / "b.safetensors")
    assert loaded.config.codec_id == "c" and loaded.config.n_codebooks == 3
    assert "valid_loss" in (tmp_path / "run" / "train.log").read_text()
    # A run stopped by its time limit between validations validates (and exports) the step it stopped at.
    timed = BackboneTrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "timed"), "steps": 100,
                                   "valid_every": 1000, "max_minutes": 1e-9,
                                   "export": str(tmp_path / "t.safetensors")})
    stopped = train_backbone(timed)
    assert stopped["step"] == 1 and stopped["best"]["step"] == 1
    assert load_backbone(tmp_path / "t.safetensors") is not None


def test_guided_run_starts_from_given_weights_and_lowers_the_alignment_penalty(tmp_path):
    from backbone.train import BackboneTrainConfig, train_backbone

    _tiny_cache(tmp_path / "tokens.npz")
    model = {k: v for k, v in TINY.items() if k not in ("n_codebooks", "speaker_dim", "frame_rate")}
    base = dict(cache=str(tmp_path / "tokens.npz"), frames_per_batch=60, valid_every=1000, log_every=1,
                warmup_steps=1)
    first = BackboneTrainConfig(out_dir=str(tmp_path / "a"), export=str(tmp_path / "a.safetensors"), steps=2,
                                model=model, **base)
    train_backbone(first)
    guided = BackboneTrainConfig(out_dir=str(tmp_path / "b"), export=str(tmp_path / "b.safetensors"), steps=60,
                                 lr=3e-3, init_from=str(tmp_path / "a" / "last.pt"), guide_weight=1.0,
                                 guide_layers=(1,), guide_heads=1, **base)
    train_backbone(guided)
    log = [json.loads(line) for line in (tmp_path / "b" / "train.log").read_text().splitlines()]
    assert log[0]["step"] == 1                                         # a new run, not a resume of run a
    assert log[-1]["align"] < log[0]["align"] - 0.05
    with pytest.raises(ValueError, match="do not fit"):
        train_backbone(BackboneTrainConfig(out_dir=str(tmp_path / "c"), export=str(tmp_path / "c.safetensors"),
                                           steps=1, guide_weight=1.0, guide_layers=(5,), model=model, **base))


def test_backbone_bench_helpers():
    from benchmarks.backbone_bench import pick, repeats_phrase, robustness_sentences
    from tts.corpus.manifest import Utterance

    assert repeats_phrase("the cat sat".split(), "the cat sat the cat sat".split())
    assert not repeats_phrase("a b c a b c".split(), "a b c a b c".split())      # the text itself repeats
    assert not repeats_phrase("one two three four".split(), "one two three four".split())
    # loops (one word thrice, two to four words twice in a row) that the text does not have
    assert not repeats_phrase("please do not".split(), "please please do not".split())   # the recogniser's own
    assert repeats_phrase("only women then we'll realize".split(), "so we we we and we realize".split())
    assert repeats_phrase("smooth and full bodied".split(), "i smirk on the on the faltering".split())
    assert not repeats_phrase("i know that that that is so".split(), "i know that that that is so".split())
    # a four-word phrase heard twice apart: the reading jumped back
    assert repeats_phrase("a b c d e f g".split(), "a b c d e a b c d".split())
    # session 25's flags that were the recogniser's, not a repeat: another phrase misheard as one the text has
    assert not repeats_phrase("those of you who think are annoying those of us who do".split(),
                              "those of us are secure now those of us up to do".split())
    assert not repeats_phrase("under eighty you are neglecting your business over eighty you are neglecting your "
                              "golf".split(), "number eighty you're neglecting your business over eighty you're "
                              "neglecting your golf".split())
    assert not repeats_phrase("if you are shooting you are neglecting your business over you are neglecting your "
                              "golf".split(), "you're neglecting your business over eighty you're neglecting your "
                              "golf".split())
    sentences = robustness_sentences(["Alpha beta, gamma.", "Delta epsilon zeta eta theta."], 5, max_words=9)
    assert [len(s.split()) for s in sentences] == [1, 3, 5, 7, 9]
    assert all(s[0].isupper() and s.endswith(".") and ",." not in s for s in sentences)
    utts = [Utterance(id=f"{s}{i}", audio="x", text="t", speaker=s, duration=1.0, split="test")
            for s in "abc" for i in range(3)]
    chosen = pick(utts, 4, random.Random(0))
    assert len(chosen) == 4 and len({u.speaker for u in chosen[:3]}) == 3    # every voice before any twice


def test_the_benchmarks_intervals():
    """benchmarks/stats.py: the intervals the benches print around a share, a paired difference and a ratio."""
    from benchmarks.backbone_bench import uncertainty
    from benchmarks.stats import paired_mean_se, ratio_interval, wilson_interval
    from benchmarks.voice_identity import IdentityTally

    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    lo, hi = wilson_interval(21, 30)
    assert lo == pytest.approx(0.521, abs=1e-3) and hi == pytest.approx(0.833, abs=1e-3)
    assert np.isnan(wilson_interval(0, 0)[0])
    mean, se, n = paired_mean_se(np.array([1.0, 2.0, np.nan, 4.0]), np.array([0.5, 1.0, 1.0, 3.0]))
    assert (mean, n) == (pytest.approx(2.5 / 3), 3) and se == pytest.approx(np.std([0.5, 1, 1], ddof=1) / np.sqrt(3))
    ours, real = np.array([3, 5, 2, 8] * 10), np.array([2, 4, 2, 5] * 10)
    lo, hi = ratio_interval(ours, real)
    assert lo < ours.sum() / real.sum() < hi and hi - lo < ratio_interval(ours[:8], real[:8])[1] - \
        ratio_interval(ours[:8], real[:8])[0]                       # more sentences, a narrower interval
    assert np.isnan(ratio_interval(ours, 0 * real)[0])
    tally = IdentityTally()
    for i in range(30):
        tally.add({"a": 0.8, "b": 0.7 if i < 21 else 0.9}, "a")
    got = uncertainty(list(ours[:30]), list(real[:30]), tally, tally, seed=0)
    assert got["identified_interval"] == wilson_interval(21, 30) and got["similarity_se"] == pytest.approx(0.0)


def test_the_calibrated_decode_is_compared_sentence_by_sentence():
    """`tts bench backbone`'s calibrated row: sentences that became closest to their own voice against those that
    stopped being, and the sign test on them (McNemar's exact test)."""
    from benchmarks.backbone_bench import calibrated_figures
    from benchmarks.stats import sign_test
    from benchmarks.voice_identity import IdentityTally

    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32) and sign_test(0, 5) == sign_test(5, 0)
    assert sign_test(21, 4) == pytest.approx(0.00091, abs=1e-5)     # session 45's 210 sentences
    plain, calibrated = IdentityTally(), IdentityTally()
    for own_plain, own_calibrated in ((0.9, 0.9), (0.5, 0.9), (0.5, 0.9), (0.9, 0.5), (0.5, 0.5)):
        plain.add({"a": own_plain, "b": 0.7}, "a")
        calibrated.add({"a": own_calibrated, "b": 0.7}, "a")
    assert plain.hits == [True, False, False, True, False] and plain.closest == 2
    got = calibrated_figures({"calibrated": [1, 2, 0, 0, 1], "real": [1, 1, 1, 1, 0]}, 20, plain, calibrated, seed=0)
    assert (got["gained"], got["lost"], got["identified"]) == (2, 1, 0.6)
    assert got["wer"] == pytest.approx(4 / 20) and got["sign_p"] == pytest.approx(1.0)


def _step_input(step_model, model: Backbone, tokens: torch.Tensor) -> torch.Tensor:
    """What a step model takes for one step's tokens [B, K]: the tokens, or their embeddings."""
    return tokens if step_model.takes_tokens else model.embed_audio(tokens[:, :, None])[:, 0]


def test_step_models_match_the_transformer_and_int8_stays_close():
    """The decoding steps (hand-written with fused weights, and on ONNX Runtime; own KV cache) compute what
    LlamaModel computes."""
    from backbone.fast import StepModel
    from backbone.onnx_step import OnnxStepModel

    model = tiny_model(3).eval()
    prompt = model.embed_prompt(torch.randn(2, 8), torch.tensor([[1, 4, 2], [3, 3, 5]]))
    steps = torch.randint(0, 12, (2, 3, 6))
    full = model.transformer(inputs_embeds=torch.cat([prompt, model.embed_audio(steps)], 1)).last_hidden_state
    expected = model.logits(full[:, prompt.shape[1]:])                        # [B, K, S, V]
    for step_model, tolerance in ((StepModel(model), 1e-4), (StepModel(model).quantized(), 0.15),
                                  (OnnxStepModel(model), 1e-4), (OnnxStepModel(model, quantized=True), 0.15)):
        cache = step_model.new_cache()
        prefill = model.transformer(inputs_embeds=prompt, use_cache=True).past_key_values
        for b in range(2):
            cache.add_row([layer.keys[b] for layer in prefill.layers], [layer.values[b] for layer in prefill.layers])
        for t in range(6):
            got, alignment = step_model(_step_input(step_model, model, steps[:, :, t]), cache)
            assert alignment is None                                          # no alignment heads
            scale = expected[:, :, t].abs().max()
            assert (got - expected[:, :, t]).abs().max() < tolerance * scale
    cache.keep([1])                                                           # a row leaves; the other goes on
    assert cache.rows == 1 and int(cache.lengths[0]) == prompt.shape[1] + 6


def aligned_tiny_model(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(BackboneConfig(**TINY, align_layers=(1,), align_heads=1))


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_step_model_reports_the_alignment_heads_attention(runtime):
    """What generation reads as the text position is the attention LlamaModel computes in those heads."""
    model = aligned_tiny_model(4).eval()
    model.transformer.set_attn_implementation("eager")
    prompt = model.embed_prompt(torch.randn(1, 8), torch.tensor([[1, 4, 2, 7]]))
    steps = torch.randint(0, 12, (1, 3, 5))
    out = model.transformer(inputs_embeds=torch.cat([prompt, model.embed_audio(steps)], 1), output_attentions=True)
    step_model = model.step_model(onnx=runtime == "onnx")
    cache = step_model.new_cache()
    prefill = model.transformer(inputs_embeds=prompt, use_cache=True).past_key_values
    cache.add_row([layer.keys[0] for layer in prefill.layers], [layer.values[0] for layer in prefill.layers])
    n = prompt.shape[1]
    for t in range(5):
        _, alignment = step_model(_step_input(step_model, model, steps[:, :, t]), cache)
        expected = out.attentions[1][0, 0, n + t, :n + t + 1]
        assert alignment.shape == (1, n + t + 1) and torch.allclose(alignment[0], expected, atol=1e-5)


def test_alignment_heads_hold_eos_until_the_text_is_read_and_force_it_after():
    text, n_chars = [1, 2, 3, 4, 5], 10
    eager = aligned_tiny_model()
    with torch.no_grad():   # the model wants to stop at once
        eager.heads.bias.view(3, -1)[0, eager.config.eos] = 1e4
    never_at_end = SamplingConfig(eos_min_read=1.01, end_margin_tokens=0.0, max_seconds_per_char=0.1,
                                  extra_seconds=0.0)
    frames = list(generate_frames(eager, Request(text, torch.zeros(8), n_chars, sampling=never_at_end)))
    assert len(frames) == frame_bounds(n_chars, 25.0, never_at_end)[1] == 25   # EOS waited for the bound

    reluctant = aligned_tiny_model()
    with torch.no_grad():   # the model never wants to stop
        reluctant.heads.bias.view(3, -1)[0, reluctant.config.eos] = -1e4
    always_at_end = SamplingConfig(end_margin_tokens=len(text) + 1, end_hold_seconds=0.4)
    frames = list(generate_frames(reluctant, Request(text, torch.zeros(8), n_chars, sampling=always_at_end)))
    assert len(frames) == 0.4 * 25 + 1        # forced once it had read the end for 0.4 s


def test_reembed_replaces_a_caches_voices_and_keeps_its_codes(tmp_path, capsys):
    """`tts train reembed`: a new speaker encoder's embeddings go into an existing cache; the codes stay."""
    from backbone.data import build_token_cache, load_token_cache
    from codec.loaders import load_codec
    from tests.test_voice import speaker_corpus
    from tts.cli import main
    from voice.encoder import EncoderConfig, SpeakerEncoder, load_encoder, save_encoder

    corpus = speaker_corpus(tmp_path / "corpus", speakers=2, clips=2, seconds=3.0, text="One two.")
    encoders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"enc{seed}.safetensors"
        encoders.append((path, save_encoder(SpeakerEncoder(EncoderConfig(channels=16, pooled_channels=32,
                                                                         embedding_dim=8)).eval(), path)))
    cache = tmp_path / "cache.npz"
    build_token_cache(corpus, cache, load_codec(), TextTokenizer(), load_encoder(encoders[0][0]), 2)
    before = load_token_cache(cache)
    assert main(["train", "reembed", "--cache", str(cache), "--encoder", str(encoders[1][0]),
                 "--corpus", str(corpus)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["was"] == encoders[0][1] and printed["encoder_id"] == encoders[1][1]
    after = load_token_cache(cache)
    assert before.meta["encoder_id"] == encoders[0][1] and after.meta["encoder_id"] == encoders[1][1]
    assert not np.allclose(before.speaker_embeddings, after.speaker_embeddings)
    assert np.allclose(np.linalg.norm(after.speaker_embeddings, axis=-1), 1.0, atol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(before.codes, after.codes, strict=True))
    assert before.speakers == after.speakers


def _add_token_starts(path) -> None:
    """Give a cache evenly spread token starts, in place."""
    from backbone.aligner import even_starts

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    frames, tokens = np.diff(arrays["code_offsets"]), np.diff(arrays["text_offsets"])
    arrays["token_starts"] = np.concatenate([even_starts(t, f) for t, f in zip(tokens, frames)]).astype(np.int16)
    np.savez(path, **arrays)


def test_recode_and_retarget_follow_a_codec_whose_ids_moved(tmp_path, capsys):
    """`tts train recode`: a codec whose first codebook is the old one re-ordered gives the re-ordered ids, and the
    re-targeted backbone predicts for new ids exactly what the old one predicted for the old ids."""
    from backbone.data import build_token_cache, load_token_cache, recode_token_cache
    from codec.loaders import load_codec, save_codec
    from tests.test_voice import speaker_corpus
    from tts.cli import main
    from voice.encoder import load_encoder

    corpus = speaker_corpus(tmp_path / "corpus", speakers=2, clips=2, seconds=3.0, text="One two.")
    # The shipped codec as re-saved (folded weights, float16), so the moved copy below differs from it only
    # in its first codebook's order: the same encoder weights, bit for bit.
    save_codec(load_codec(), tmp_path / "base.safetensors")
    codec = load_codec(tmp_path / "base.safetensors")
    old_cache, new_cache = tmp_path / "old.npz", tmp_path / "new.npz"
    build_token_cache(corpus, old_cache, codec, TextTokenizer(), load_encoder(), 2)
    _add_token_starts(old_cache)     # as `tts train align` does
    order = torch.randperm(codec.config.card, generator=torch.Generator().manual_seed(0))
    codec.quantizer.layers[0].embed.copy_(codec.quantizer.layers[0].embed[order])
    new_codec_id = save_codec(codec, tmp_path / "moved.safetensors")
    old = load_token_cache(old_cache)
    model = Backbone(BackboneConfig(**{**TINY, "n_codebooks": 2, "card": codec.config.card,
                                       "speaker_dim": old.speaker_embeddings.shape[-1]},
                                    codec_id=old.meta["codec_id"])).eval()
    save_backbone(model, tmp_path / "old_backbone.safetensors")
    model = load_backbone(tmp_path / "old_backbone.safetensors")   # the weights as stored (float16)
    stranger = Backbone(BackboneConfig(**{**TINY, "n_codebooks": 2, "card": codec.config.card}, codec_id="other"))
    save_backbone(stranger, tmp_path / "stranger.safetensors")
    assert main(["train", "recode", "--cache", str(old_cache), "--out", str(new_cache), "--codec",
                 str(tmp_path / "moved.safetensors"), "--corpus", str(corpus), "--backbone",
                 str(tmp_path / "stranger.safetensors")]) == 2
    assert "speaks codec other" in capsys.readouterr().err and not new_cache.exists()   # refused before encoding
    assert main(["train", "recode", "--cache", str(old_cache), "--out", str(new_cache), "--codec",
                 str(tmp_path / "moved.safetensors"), "--corpus", str(corpus), "--workers", "2", "--backbone",
                 str(tmp_path / "old_backbone.safetensors"), "--backbone-out", str(tmp_path / "b.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["codec_id"] == new_codec_id
    new = load_token_cache(new_cache)
    back = torch.argsort(order).numpy()      # new id of each old id
    for a, b in zip(old.codes, new.codes, strict=True):
        assert np.array_equal(back[a[0]], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(old.speaker_embeddings, new.speaker_embeddings) and old.texts == new.texts
    # The same frames (rate and count): the text's token starts still place it, so they are kept.
    assert all(np.array_equal(a, b) for a, b in zip(old.token_starts, new.token_starts, strict=True))
    other_rate = tmp_path / "other_rate.npz"      # a cache made at another frame rate: its starts cannot hold
    with np.load(old_cache) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array(repr({**ast.literal_eval(str(arrays["meta"])), "frame_rate": 12.5}))
    np.savez(other_rate, **arrays)
    recode_token_cache(other_rate, tmp_path / "realign.npz", corpus, tmp_path / "moved.safetensors")
    assert load_token_cache(tmp_path / "realign.npz").token_starts is None

    moved = load_backbone(tmp_path / "b.safetensors")
    assert moved.config.codec_id == new_codec_id
    old_ids = torch.from_numpy(old.codes[0][:, :6].astype(np.int64))[None]
    new_ids = torch.from_numpy(new.codes[0][:, :6].astype(np.int64))[None]
    seen = torch.from_numpy(np.unique(new.codes[0][0]).astype(np.int64))   # ids the correspondence has evidence of
    hidden = torch.randn(1, 3, model.config.d_model)
    with torch.no_grad():
        assert torch.allclose(model.embed_audio(old_ids), moved.embed_audio(new_ids), atol=1e-5)
        before, after = model.logits(hidden)[0, 0], moved.logits(hidden)[0, 0]
    old_of_new = torch.from_numpy(order.numpy())   # the old id of each new id
    assert torch.allclose(after[:, seen], before[:, old_of_new[seen]], atol=1e-5)


def test_robustness_real_audio_check_counts_the_recognisers_own_flags(tmp_path):
    """The baseline beside the repeated-phrase figure: the same check and the WER on the voices' real audio."""
    import numpy as np
    import soundfile as sf

    from benchmarks.backbone_bench import _real_audio_check
    from tts.corpus.manifest import Utterance

    heard = {"the cat sat": "the cat the cat sat", "a dog ran": "a dog ran", "one more": "one more"}

    class ScriptedRecognizer:   # what pocketsphinx would hear, keyed by the clip's length in samples
        def transcribe(self, pcm: np.ndarray) -> str:
            return by_length[len(pcm)]

    utts, by_length = [], {}
    for i, (speaker, text) in enumerate([("a", "the cat sat"), ("a", "one more"), ("b", "a dog ran")]):
        sf.write(tmp_path / f"{i}.wav", np.zeros(1000 + i, np.float32), 16000)
        by_length[1000 + i] = heard[text]
        utts.append(Utterance(id=f"u{i}", audio=f"{i}.wav", text=text, speaker=speaker, duration=0.1, split="test"))
    result = _real_audio_check(ScriptedRecognizer(), str(tmp_path), utts, ["a", "b"], per_voice=6)
    assert result["utterances"] == 3 and result["repeated_phrase"] == 1
    assert result["wer_by_voice"] == {"a": 2 / 5, "b": 0.0}
    assert _real_audio_check(ScriptedRecognizer(), str(tmp_path), utts, ["a"], per_voice=1)["utterances"] == 1
    # with the reader (benchmarks/token_reader.py): its own flags and token error rate on each voice
    from benchmarks.intelligibility import edit_alignment
    from benchmarks.token_reader import Reading

    class ScriptedReader:          # hears "the cat sat" (tokens 1-5) three times over, the others as written
        def read(self, pcm: np.ndarray, text: str) -> Reading:
            expected = [1, 2, 3, 4, 5]
            heard = expected * 3 if text == "the cat sat" else expected
            errors, inserted = edit_alignment(expected, heard)
            return Reading(errors, len(expected), inserted, heard)

    read = _real_audio_check(ScriptedRecognizer(), str(tmp_path), utts, ["a", "b"], per_voice=6,
                             reader=ScriptedReader())
    assert read["inserted_phrase"] == 1 and read["inserted"] == [10, 0, 0]     # voice a's two, then b's
    assert read["reader_ter_by_voice"] == {"a": 10 / 10, "b": 0.0}


def test_warp_adds_played_faster_speakers_and_keeps_the_cache(tmp_path, capsys):
    """`tts train warp`: each training speaker at each rate is a new training speaker whose codes are the codec's
    of its played-faster audio, with its own embeddings and the token starts moved to its frames; the cache's
    own utterances stay as they were."""
    import soundfile as sf

    from backbone.data import build_token_cache, load_token_cache
    from tts.audio import played_faster
    from codec.loaders import load_codec
    from tests.test_voice import speaker_corpus
    from tts.cli import main
    from tts.corpus.manifest import audio_path, read_manifest
    from voice.encoder import EncoderConfig, SpeakerEncoder, load_encoder, save_encoder

    corpus = speaker_corpus(tmp_path / "corpus", speakers=2, clips=4, seconds=3.0, text="One two three four.")
    torch.manual_seed(0)
    encoder = tmp_path / "enc.safetensors"
    save_encoder(SpeakerEncoder(EncoderConfig(channels=16, pooled_channels=32, embedding_dim=8)).eval(), encoder)
    cache, warped = tmp_path / "cache.npz", tmp_path / "warped.npz"
    build_token_cache(corpus, cache, load_codec(), TextTokenizer(), load_encoder(encoder), 2)
    _add_token_starts(cache)
    args = ["train", "warp", "--cache", str(cache), "--out", str(warped), "--corpus", str(corpus),
            "--encoder", str(encoder), "--share", "0.5"]
    assert main([*args, "--rates", "0.8", "1"]) == 2
    assert "not 1" in capsys.readouterr().err and not warped.exists()
    assert main([*args, "--rates", "0.8", "1.25", "--workers", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["warped"] == [{"rates": [0.8, 1.25], "share": 0.5, "utterances": 8, "speakers": 4}]

    before, after = load_token_cache(cache), load_token_cache(warped)
    n = len(before.ids)
    assert after.ids[:n] == before.ids and after.speakers[:n] == before.speakers
    assert all(np.array_equal(a, b) for a, b in zip(before.codes, after.codes[:n]))
    assert all(np.array_equal(a, b) for a, b in zip(before.token_starts, after.token_starts[:n]))
    assert np.array_equal(after.speaker_embeddings[:len(before.speaker_names)], before.speaker_embeddings)
    assert sorted(after.speaker_names[len(before.speaker_names):]) == ["spk0@0.8", "spk0@1.25", "spk1@0.8",
                                                                       "spk1@1.25"]
    assert after.splits[n:] == ["train"] * 8 and after.texts[n:] == [before.texts[0]] * 8

    codec, by_id = load_codec(), {u.id: u for u in read_manifest(corpus)}
    for i in range(n, len(after.ids)):
        source, rate = after.ids[i].split("@")
        j = before.ids.index(source)
        rate = float(rate)
        assert after.speakers[i] == f"{before.speakers[j]}@{rate:g}"
        x, sr = sf.read(str(audio_path(corpus, by_id[source])), dtype="float32")
        with torch.inference_mode():
            expected = codec.encode(torch.from_numpy(played_faster(x, rate, sr))[None, None], 2)[0].numpy()
        assert np.array_equal(after.codes[i], expected)
        assert abs(after.codes[i].shape[1] - before.codes[j].shape[1] / rate) <= 2
        starts = after.token_starts[i]
        assert np.all(np.diff(starts) >= 0) and starts[-1] < after.codes[i].shape[1]
        assert np.allclose(starts, before.token_starts[j] / rate, atol=1.0)
    # a played-faster voice is another voice to the encoder, not its source's
    own = {name: e.mean(0) for name, e in zip(after.speaker_names, after.speaker_embeddings)}
    assert not np.allclose(own["spk0@1.25"], own["spk0"], atol=1e-3)

    # a second round plays only the corpus's own speakers, at rates the cache has not had
    twice = tmp_path / "twice.npz"
    again = [*args[:3], str(warped), "--out", str(twice), *args[6:]]
    assert main([*again, "--rates", "0.9", "1.25"]) == 2
    assert "already has speakers warped at rates 1.25\n" in capsys.readouterr().err and not twice.exists()
    assert main([*again, "--rates", "0.9"]) == 0
    assert json.loads(capsys.readouterr().out)["warped"] == [report["warped"][0], {"rates": [0.9], "share": 0.5,
                                                                                 "utterances": 4, "speakers": 2}]
    stacked = load_token_cache(twice)
    assert stacked.ids[:len(after.ids)] == after.ids
    assert sorted(stacked.speaker_names[len(after.speaker_names):]) == ["spk0@0.9", "spk1@0.9"]
