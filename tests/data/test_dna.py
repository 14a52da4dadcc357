"""DNA: the FASTA reader, the nucleotide tokenizer, genome splits and windows, bits per base, the probe."""
import gzip

import pytest
import torch

from helpers import genome_dir

from maskdiff.data import dna
from maskdiff.data.dna import directory_genomes, genome_windows, nucleotide_tokenizer, split_genomes
from maskdiff.data.fasta import read_fasta
from maskdiff.errors import MaskdiffError
from maskdiff.evaluation.nelbo import EvalResult
from maskdiff.evaluation.probe import kmer_frequencies, logistic_regression_accuracy

MULTI = ">chr1 first record\nACGTacgt\n\n   \nNNNNnnnnAC\n>plasmid2\nggccTTAA\n  \n>chr3\nRYacgN\n"


def test_fasta_multi_record_lower_case_n_runs_blank_lines(tmp_path):
    path = tmp_path / "g.fasta"
    path.write_text(MULTI)
    recs = read_fasta(path)
    assert [r.name for r in recs] == ["chr1", "plasmid2", "chr3"]
    assert recs[0].sequence == "ACGTACGTNNNNNNNNAC"  # lower case folded, N run kept, blank lines skipped
    assert recs[1].sequence == "GGCCTTAA"
    assert recs[2].sequence == "NNACGN"  # IUPAC ambiguity codes R, Y read as N


def test_fasta_gz_equals_plain(tmp_path):
    plain, packed = tmp_path / "g.fa", tmp_path / "g.fa.gz"
    plain.write_text(MULTI)
    with gzip.open(packed, "wt") as f:
        f.write(MULTI)
    assert read_fasta(packed) == read_fasta(plain)


@pytest.mark.parametrize("text, needles", [
    ("ACGT\n>r\nACGT\n", ["line 1", "before the first '>'"]),
    (">r\nACGT\nAC-GT\n", ["line 3", "'-'"]),
    (">r\nACGU\n", ["line 2", "'U'"]),
    (">r\nACGT\n>empty\n\n>s\nAC\n", ["line 3", "'empty' has no sequence"]),
    ("\n\n", ["no FASTA record"]),
])
def test_malformed_fasta_names_file_and_line(tmp_path, text, needles):
    path = tmp_path / "bad.fasta"
    path.write_text(text)
    with pytest.raises(MaskdiffError) as err:
        read_fasta(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_nucleotide_tokenizer_ids_and_mask():
    tok = nucleotide_tokenizer()
    assert tok.vocab_size == 5 and tok.mask_id == 5
    assert tok.encode("ACGTN").tolist() == [0, 1, 2, 3, 4]
    assert tok.decode([0, 5, 4]) == "A_N"


def test_directory_corpus_holds_out_whole_genomes(tmp_path):
    root = genome_dir(tmp_path)
    splits = directory_genomes(root)
    names = {k: [g.name for g in v] for k, v in splits.items()}
    assert names == {"train": ["a1", "a2", "c1"], "validation": ["c2"], "test": ["a3", "c3"]}
    assert [g.species for g in splits["test"]] == ["at", "gc"]
    streams = split_genomes(str(root), "train", nucleotide_tokenizer())
    assert [s.numel() for s in streams] == [3000] * 3
    assert int((streams[0] == 4).sum()) == 40  # the N run


def test_missing_ragout_tells_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(dna, "RAGOUT_ROOT", tmp_path / "absent")
    with pytest.raises(MaskdiffError, match="apt-get install ragout-examples"):
        dna.genome_splits("ragout")
    with pytest.raises(MaskdiffError, match="train/, validation/ and test/"):
        dna.genome_splits(str(tmp_path))


def test_windows_stay_inside_one_genome():
    genomes = [torch.zeros(50, dtype=torch.long), torch.ones(80, dtype=torch.long), torch.full((5,), 2)]
    w = genome_windows(genomes, 10, 500, torch.Generator().manual_seed(0))
    assert w.shape == (500, 10)
    assert bool((w == w[:, :1]).all())  # constant rows: no window crosses a boundary
    frac = float((w[:, 0] == 1).double().mean())  # 71 of 112 windows are in the second genome
    assert abs(frac - 71 / 112) < 0.07
    assert not bool((w == 2).any())  # a genome shorter than the window is never drawn


def test_bits_per_base_by_hand():
    # 2 sequences, 100 + 50 bases, NELBO 60 and 45 nats: (105 / 150) / ln 2 = 0.700 / 0.693147 = 1.009887 bits per base
    r = EvalResult(torch.tensor([60.0, 45.0], dtype=torch.float64), torch.tensor([100.0, 50.0], dtype=torch.float64))
    est, lo, hi = r.bits_per_token()
    assert est == pytest.approx(1.009887, abs=1e-6)
    assert lo < est < hi
    assert r.summary("bits/base").startswith("bits/base <= 1.0099")


def test_kmer_frequencies_by_hand():
    x = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 0]])  # ACGT, AANA
    f = kmer_frequencies(x, ks=(1, 2))
    assert f.shape == (2, 4 + 16)
    assert f[0, :4].tolist() == [0.25] * 4
    assert f[0, 4 + 1] == f[0, 4 + 6] == f[0, 4 + 11] == pytest.approx(1 / 3)  # AC, CG, GT
    assert f[1, :4].tolist() == [1.0, 0, 0, 0]  # the N is left out
    assert f[1, 4 + 0] == 1.0  # AA is the only clean 2-mer


def test_logistic_regression_separates_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.randn(200, 3, generator=g) + 3.0 * y[:, None]
    assert logistic_regression_accuracy(x[:100], y[:100], x[100:], y[100:]) > 0.95
    noise = torch.randn(200, 3, generator=g)
    assert logistic_regression_accuracy(noise[:100], y[:100], noise[100:], y[100:]) < 0.75


def test_dna_eval_chunks_cover_every_base_once_and_interleave_genomes(tmp_path):
    from maskdiff.modalities import eval_chunks
    from maskdiff.presets import dna as dna_preset

    root = genome_dir(tmp_path)
    cfg = dna_preset()
    cfg.data.corpus, cfg.data.length = str(root), 64
    tok = nucleotide_tokenizer()
    tokens, valid = eval_chunks(cfg, tok, "test", None)
    streams = split_genomes(str(root), "test", tok)
    assert int(valid.sum()) == sum(s.numel() for s in streams) == 6000
    assert tokens.shape == (2 * 47, 64)  # 3000 bases = 46 full chunks + 1 padded, per genome
    firsts = {tuple(s[:64].tolist()) for s in streams}
    assert {tuple(tokens[0].tolist()), tuple(tokens[1].tolist())} == firsts  # the first rows come from both genomes
