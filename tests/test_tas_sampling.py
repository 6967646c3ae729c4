"""TAS-balanced sampling (Hofstätter et al., SIGIR 2021, arXiv:2104.06967): topic-aware batches from query clusters,
margin-balanced pair draws, a pure function of (seed, epoch, rank, world size); the random sampler; cluster files,
k-means clusters and their cache; query keys of the three teacher formats."""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter

import numpy as np
import pytest

from kd_pyserini.errors import KdError, UsageError
from kd_pyserini.train import clusters as cl
from kd_pyserini.train.batches import epoch_order, num_batches
from kd_pyserini.train.clusters import (QueryClusterError, QueryClusters, build_query_clusters, cached_query_clusters,
                                        discard_cache, read_query_clusters, write_query_clusters)
from kd_pyserini.train.sampling import (QueryKeys, RandomSampler, SamplingError, TasBalancedSampler, query_keys,
                                        query_texts, text_key)
from kd_pyserini.train.teacher_files import IdTeacherData, JsonlTeacherData, TextTeacherData
from kd_pyserini.trec_io import FormatError

# chi-square critical values at p = 0.001 (scipy.stats.chi2.ppf(0.999, df))
CHI2_999 = {1: 10.828, 2: 13.816, 50: 86.661}


def chi2(observed, expected) -> float:
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    return float(((observed - expected) ** 2 / expected).sum())


def synthetic(sizes=(3, 5, 8, 13, 21, 2), seed=0, pairs=(3, 7)):
    """Queries ``c<i>q<j>`` in clusters of ``sizes``, each with a random number of pairs (shuffled triples)."""
    rng = np.random.default_rng(seed)
    clusters = [[f"c{i}q{j}" for j in range(n)] for i, n in enumerate(sizes)]
    keys = [q for c in clusters for q in c for _ in range(int(rng.integers(*pairs)))]
    perm = rng.permutation(len(keys))
    keys = [keys[i] for i in perm]
    return keys, rng.normal(size=len(keys)), clusters


# ------------------------------------------------------------------------------------------------ random sampler

@pytest.mark.parametrize("n,bs,world", [(10, 4, 1), (37, 5, 1), (37, 5, 2), (37, 4, 3), (2, 8, 1)])
def test_random_sampler_is_todays_epoch_order(n, bs, world):
    s = RandomSampler(n, bs)
    assert s.batches_per_epoch(world) == num_batches(n, bs, world)
    for epoch in (0, 3):
        for rank in range(world):
            batches = s.epoch_batches(epoch, 7, rank, world)
            order = epoch_order(n, epoch, 7, rank, world)
            assert len(batches) == num_batches(n, bs, world)
            assert [len(b) for b in batches[:-1]] == [bs] * (len(batches) - 1)
            assert np.array_equal(np.concatenate(batches), order)


# --------------------------------------------------------------------------------------------- topic-aware batches

def _cluster_of(clusters):
    return {q: i for i, c in enumerate(clusters) for q in c}


@pytest.mark.parametrize("bs", [4, 6])
def test_every_batch_draws_its_queries_from_one_cluster_or_the_fewest_when_one_runs_short(bs):
    keys, margins, clusters = synthetic()
    cof = _cluster_of(clusters)
    s = TasBalancedSampler(keys, margins, clusters, bs)
    spanning = 0
    for epoch in range(20):
        batches = s.epoch_batches(epoch, seed=1)
        queries = [[keys[i] for i in b] for b in batches]
        flat = [q for b in queries for q in b]
        assert sorted(flat) == sorted(cof), "every query exactly once per epoch"
        assert [len(b) for b in batches[:-1]] == [bs] * (len(batches) - 1)
        last_pos = {}
        for pos, q in enumerate(flat):
            last_pos[cof[q]] = pos
        pos = 0
        for b in queries:
            runs = [cof[b[0]]]
            for q in b[1:]:
                if cof[q] != runs[-1]:
                    runs.append(cof[q])
            assert len(runs) == len(set(runs)), f"a cluster split within a batch: {runs}"
            # a batch moves on to another cluster only when the previous one has nothing left this epoch
            for c in runs[:-1]:
                assert last_pos[c] < pos + len(b), f"cluster {c} was left before it ran short"
            spanning += len(runs) > 1
            pos += len(b)
    assert spanning > 0  # the short-cluster case really happened


def test_a_cluster_is_drawn_in_proportion_to_the_queries_it_has_left():
    clusters = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(30)]]
    keys = [q for c in clusters for q in c for _ in range(2)]
    s = TasBalancedSampler(keys, np.arange(len(keys), dtype=float), clusters, 5)
    first = Counter(keys[s.epoch_batches(e, seed=3)[0][0]][0] for e in range(2000))
    assert chi2([first["a"], first["b"]], [500, 1500]) < CHI2_999[1], first


def test_every_batch_draws_its_cluster_afresh_not_favouring_the_last_one():
    """Two clusters of 10 queries, batch size 1: after a batch from cluster a, 9 of a's and 10 of b's 19 queries are
    left, so the next batch is from a with probability 9/19 (a sampler that keeps a cluster until some other
    criterion fires gives ~0.95 here; the first draw alone cannot tell them apart)."""
    clusters = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)]]
    keys = [q for c in clusters for q in c for _ in range(2)]
    s = TasBalancedSampler(keys, np.arange(len(keys), dtype=float), clusters, 1)
    same = 0
    n = 3000
    for e in range(n):
        b = s.epoch_batches(e, seed=11)
        same += keys[b[0][0]][0] == keys[b[1][0]][0]
    assert chi2([same, n - same], [n * 9 / 19, n * 10 / 19]) < CHI2_999[1], same / n


def test_leftover_queries_unknown_qids_and_single_pair_queries():
    """Queries in no cluster form one extra cluster (warned); cluster qids unknown to the teacher data are ignored
    with a warning naming file:line; single-pair queries are dropped and counted."""
    keys = ["a", "a", "b", "b", "c", "c", "d", "d", "e"]
    clusters = QueryClusters([["a", "b", "zz"], ["c"]], path="clusters.tsv", line_numbers=[1, 3])
    s = TasBalancedSampler(keys, np.arange(9.0), clusters, 2)
    assert (s.queries, s.dropped_queries, s.dropped_triples, s.unclustered, s.unknown_qids, s.clusters) == \
        (4, 1, 1, 1, 1, 3)
    flat = [keys[i] for b in s.epoch_batches(0, 0) for i in b]
    assert sorted(flat) == ["a", "b", "c", "d"]


def test_warnings_name_counts_and_the_first_place(caplog):
    keys, margins, clusters = synthetic(sizes=(4, 4))
    cfile = QueryClusters([clusters[0] + ["nope1", "nope2"]], path="/x/c.tsv", line_numbers=[7])
    with caplog.at_level(logging.WARNING, logger="kd_pyserini.train.sampling"):
        TasBalancedSampler(keys + ["solo"], np.append(margins, 0.0), cfile, 4)
    text = caplog.text
    assert "2 of the 6 qids of the query clusters are not queries of the teacher data" in text
    assert "/x/c.tsv:7: 'nope1'" in text
    assert "4 of the 8 usable teacher queries are in no query cluster" in text
    assert "drops 1 queries with a single pair (1 triples)" in text


# --------------------------------------------------------------------------------------------- balanced margins

def test_margin_bins_are_drawn_uniformly_among_non_empty_bins():
    """Per query 10 equal-width bins over [min, max]: bin 0 holds 51 pairs, bin 5 holds 3, bin 9 holds 2 (the
    maximum lands in the last bin); a draw picks a non-empty bin uniformly, then a pair in it uniformly."""
    bin_margins = [(0, x) for x in np.linspace(0.0, 0.95, 51)] + [(5, 5.0), (5, 5.5), (5, 5.99)] + \
                  [(9, 9.0), (9, 10.0)]
    nq = 40
    keys, margins, bin_of, pair_of = [], [], [], []
    for q in range(nq):
        for j, (b, m) in enumerate(bin_margins):
            keys.append(f"q{q}")
            margins.append(m - 3.0)  # shifted: bins are relative to each query's own min..max
            bin_of.append(b)
            pair_of.append(j)
    order = np.random.default_rng(0).permutation(len(keys))
    keys, margins = [keys[i] for i in order], np.array(margins)[order]
    bin_of, pair_of = np.array(bin_of)[order], np.array(pair_of)[order]
    s = TasBalancedSampler(keys, margins, [[f"q{q}" for q in range(nq)]], batch_size=8, bins=10)
    drawn = np.concatenate([np.concatenate(s.epoch_batches(e, seed=11)) for e in range(300)])
    assert len(drawn) == 300 * nq
    counts = Counter(bin_of[drawn].tolist())
    assert set(counts) == {0, 5, 9}
    n = len(drawn)
    assert chi2([counts[0], counts[5], counts[9]], [n / 3] * 3) < CHI2_999[2], counts
    # within bin 0, each of its 51 pairs is equally likely
    in0 = Counter(pair_of[drawn][bin_of[drawn] == 0].tolist())
    assert chi2([in0[j] for j in range(51)], [counts[0] / 51] * 51) < CHI2_999[50]
    # uniform over *pairs* would draw bin 0 91% of the time: the test tells the two apart
    assert counts[0] / n < 0.4


def test_equal_margins_make_one_bin_and_a_margin_on_an_edge_goes_up():
    keys = ["a"] * 3 + ["b"] * 3
    margins = np.array([2.0, 2.0, 2.0, 0.0, 5.0, 10.0])  # b: 5.0 is on the edge of bins 0|1 (bins=2)
    s = TasBalancedSampler(keys, margins, [["a", "b"]], 2, bins=2)
    drawn = Counter(int(i) for e in range(3000) for b in s.epoch_batches(e, 0) for i in b)
    assert chi2([drawn[0], drawn[1], drawn[2]], [1000] * 3) < CHI2_999[2]
    # b's non-empty bins: [0.0] and [5.0, 10.0]: 3 draws 1/2, 4 and 5 draws 1/4 each
    assert chi2([drawn[3], drawn[4], drawn[5]], [1500, 750, 750]) < CHI2_999[2], drawn


# ----------------------------------------------------------------------------------------- purity and DDP

def test_batches_are_a_pure_function_of_seed_epoch_rank_and_world_size():
    keys, margins, clusters = synthetic(seed=4)
    a = TasBalancedSampler(keys, margins, clusters, 4)
    b = TasBalancedSampler(keys, margins, clusters, 4)

    def same(x, y):
        return len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))

    ref = a.epoch_batches(2, 5, 1, 2)
    a.epoch_batches(7, 1)  # other calls in between change nothing
    assert same(ref, a.epoch_batches(2, 5, 1, 2))
    assert same(ref, b.epoch_batches(2, 5, 1, 2))
    assert not same(a.epoch_batches(3, 5, 1, 2), ref)
    assert not same(a.epoch_batches(2, 6, 1, 2), ref)
    assert not same(a.epoch_batches(2, 5, 0, 2), ref)
    # the key representation does not matter: QueryKeys with another code order gives the same batches
    names = sorted(set(keys), reverse=True)
    codes = np.array([names.index(k) for k in keys], dtype=np.int32)
    c = TasBalancedSampler(QueryKeys(names, codes), margins, clusters, 4)
    assert same(ref, c.epoch_batches(2, 5, 1, 2))
    # the global generator is neither used nor disturbed
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    a.epoch_batches(9, 9)
    assert np.random.random() == before


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ddp_ranks_share_the_epoch_plan_with_equal_batch_counts(world):
    keys, margins, clusters = synthetic(seed=2)
    s = TasBalancedSampler(keys, margins, clusters, 4)
    total = -(-s.queries // 4)
    plan = s.epoch_batches(1, 3)
    assert len(plan) == total == s.batches_per_epoch(1)
    per = s.batches_per_epoch(world)
    assert per == total // world
    ranks = [s.epoch_batches(1, 3, r, world) for r in range(world)]
    assert [len(r) for r in ranks] == [per] * world
    for r in range(world):
        for j, batch in enumerate(ranks[r]):
            assert np.array_equal(batch, plan[j * world + r])
    used = [keys[i] for r in ranks for b in r for i in b]
    assert len(used) == len(set(used)), "no query twice in an epoch, across ranks"
    assert len(set(keys)) - len(used) < world * 4


def test_more_ranks_than_batches_leaves_none():
    s = TasBalancedSampler(["a", "a", "b", "b"], [0.0, 1.0, 0.0, 1.0], [["a", "b"]], 4)
    assert s.batches_per_epoch(1) == 1 and s.batches_per_epoch(2) == 0
    assert s.epoch_batches(0, 0, 1, 2) == []
    with pytest.raises(UsageError, match="rank 2 is not in 0..1"):
        s.epoch_batches(0, 0, 2, 2)


# ---------------------------------------------------------------------------------------------------- bad input

def _one_line(e: pytest.ExceptionInfo) -> str:
    assert isinstance(e.value, KdError)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_qid_in_two_clusters_names_both_lines(tmp_path):
    f = tmp_path / "clusters.tsv"
    f.write_text("1\t2\t3\n\n4\t2\n")
    with pytest.raises(FormatError) as e:
        read_query_clusters(f)
    msg = _one_line(e)
    assert msg.startswith(f"{f}:3: qid '2' is already in the cluster at {f}:1")
    f.write_text("1\t2\n3\t3\n")
    with pytest.raises(FormatError, match=r":2: qid '3' occurs twice here"):
        read_query_clusters(f)
    with pytest.raises(SamplingError) as e:
        TasBalancedSampler(["1", "1", "2", "2"], np.zeros(4), [["1"], ["2", "1"]], 2)
    assert "(cluster #1 and cluster #2)" in _one_line(e)


def test_bad_cluster_files_give_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        read_query_clusters(tmp_path / "missing.tsv")
    assert "does not exist" in _one_line(e)
    f = tmp_path / "c.tsv"
    f.write_bytes(b"1\t2\n3\t\xff4\n")
    with pytest.raises(FormatError) as e:
        read_query_clusters(f)
    assert _one_line(e).startswith(f"{f}:2: not valid UTF-8")
    f.write_text("\n\n  \n")
    with pytest.raises(QueryClusterError) as e:
        read_query_clusters(f)
    assert "holds no qids" in _one_line(e)


def test_clusters_naming_none_of_the_queries_is_an_error(tmp_path):
    f = tmp_path / "c.tsv"
    f.write_text("\n101\t102\n103\n")
    clusters = read_query_clusters(f)
    keys = [text_key("what is x")] * 2 + [text_key("what is y")] * 2
    with pytest.raises(SamplingError) as e:
        TasBalancedSampler(keys, [0.0, 1.0, 0.0, 1.0], clusters, 2)
    msg = _one_line(e)
    assert f"none of the 3 qids of the query clusters (first: {f}:2: '101')" in msg
    assert "pass --queries FILE" in msg


def test_inputs_without_a_usable_query_or_of_unequal_length_are_refused():
    with pytest.raises(SamplingError) as e:
        TasBalancedSampler(["a", "b"], [1.0, 2.0], [["a", "b"]], 2)
    assert "no query of the teacher data has 2 or more pairs" in _one_line(e)
    with pytest.raises(UsageError, match="3 query keys but 2 margins"):
        TasBalancedSampler(["a", "a", "b"], [1.0, 2.0], [["a"]], 2)
    with pytest.raises(SamplingError, match="triple #2 is not finite"):
        TasBalancedSampler(["a", "a"], [1.0, float("nan")], [["a"]], 2)
    with pytest.raises(UsageError):
        TasBalancedSampler(["a", "a"], [1.0, 2.0], [["a"]], 2, bins=0)


# --------------------------------------------------------------------------------------------- cluster files

def test_cluster_file_round_trip_and_matchmaker_blank_lines(tmp_path):
    f = tmp_path / "out" / "clusters.tsv"
    write_query_clusters(f, [["3", "1"], [], ["2"]])
    assert f.read_text() == "3\t1\n2\n"
    assert [p.name for p in f.parent.iterdir()] == ["clusters.tsv"]  # no temporary left behind
    got = read_query_clusters(f)
    assert got == [["3", "1"], ["2"]] and got.line_numbers == [1, 2]
    g = tmp_path / "matchmaker.tsv"  # matchmaker writes a blank line per empty centroid
    g.write_text("\n5\t6\n\n7\n")
    got = read_query_clusters(g)
    assert got == [["5", "6"], ["7"]] and got.where(1) == f"{g}:4"
    with pytest.raises(UsageError, match="holds whitespace"):
        write_query_clusters(f, [["a b"]])
    with pytest.raises(UsageError, match="cluster #1 and cluster #2"):
        write_query_clusters(f, [["a"], ["a"]])
    assert f.read_text() == "3\t1\n2\n"  # a refused write leaves the old file


class FakeEncoder:
    """Vectors from a fixed table (two well-separated directions), counting the texts it encodes."""

    def __init__(self, card, table):
        from kd_pyserini.cards import get_card

        self.card, self.table, self.calls = get_card(card), table, 0

    def embed(self, texts, max_length):
        self.calls += 1
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def test_cluster_cache_is_reused_only_for_the_same_settings(tmp_path, minilm_dir, monkeypatch):
    rng = np.random.default_rng(0)
    queries = {f"q{i}": f"text {i}" for i in range(12)}
    table = {t: rng.normal(size=8) + (5 if i < 6 else -5) * np.eye(8)[i % 2] for i, t in enumerate(queries.values())}
    enc = FakeEncoder(str(minilm_dir), table)
    cache = tmp_path / "query_clusters.tsv"
    first = cached_query_clusters(cache, queries, 2, str(minilm_dir), 1, encoder=enc)
    assert enc.calls == 1 and cache.is_file() and (tmp_path / "query_clusters.tsv.json").is_file()
    assert sorted(q for c in first for q in c) == sorted(queries)
    assert isinstance(first, QueryClusters) and first.path == str(cache)
    again = cached_query_clusters(cache, queries, 2, str(minilm_dir), 1, encoder=enc)
    assert enc.calls == 1 and again == first
    cached_query_clusters(cache, queries, 2, str(minilm_dir), 2, encoder=enc)  # other seed
    assert enc.calls == 2
    cached_query_clusters(cache, queries, 3, str(minilm_dir), 2, encoder=enc)  # other k
    assert enc.calls == 3
    cached_query_clusters(cache, {**queries, "q0": "changed"}, 3, str(minilm_dir), 2,
                          encoder=FakeEncoder(str(minilm_dir), {**table, "changed": table["text 0"]}))
    cached_query_clusters(cache, queries, 3, str(minilm_dir), 2, encoder=enc)  # back: the cache moved on
    assert enc.calls == 4
    cache.write_text(cache.read_text() + "extra\n")  # an edited cache is never trusted
    cached_query_clusters(cache, queries, 3, str(minilm_dir), 2, encoder=enc)
    assert enc.calls == 5 and "extra" not in cache.read_text()
    (tmp_path / "query_clusters.tsv.json").write_text("{not json")
    cached_query_clusters(cache, queries, 3, str(minilm_dir), 2, encoder=enc)
    assert enc.calls == 6
    discard_cache(cache)
    assert list(tmp_path.iterdir()) == []
    discard_cache(cache)  # absent: fine


def test_build_query_clusters_with_minilm_groups_topics(minilm_dir):
    topics = [["how to bake a chocolate cake", "chocolate cake recipe", "easy chocolate cake baking",
               "best chocolate cake to bake at home"],
              ["distance from earth to mars", "how far away is mars from earth", "mars earth distance in km",
               "how many miles to mars from earth"],
              ["sort a list in python", "python sort list of numbers", "how to sort python lists",
               "python list sorting example"]]
    order = [5, 0, 9, 2, 7, 11, 1, 4, 10, 3, 8, 6]  # topics interleaved in the input
    flat = [t for topic in topics for t in topic]
    queries = {f"q{i}": flat[i] for i in order}
    got = build_query_clusters(queries, 3, str(minilm_dir), seed=0)
    assert sorted(sorted(c, key=lambda q: int(q[1:])) for c in got) == \
        [[f"q{i}" for i in range(j, j + 4)] for j in (0, 4, 8)]
    assert all(c == [q for q in queries if q in c] for c in got)  # members keep the input order
    assert build_query_clusters(queries, 3, str(minilm_dir), seed=0) == got
    with pytest.raises(UsageError, match="cannot make 13 query clusters from 12 queries"):
        build_query_clusters(queries, 13, str(minilm_dir))


def test_cached_clusters_record_what_they_were_built_from(tmp_path, minilm_dir):
    queries = {"a": "x", "b": "y"}
    enc = FakeEncoder(str(minilm_dir), {"x": [1.0, 0.0], "y": [0.0, 1.0]})
    cache = tmp_path / "c.tsv"
    cached_query_clusters(cache, queries, 2, str(minilm_dir), 5, encoder=enc)
    record = json.loads((tmp_path / "c.tsv.json").read_text())
    assert record["settings"]["k"] == 2 and record["settings"]["seed"] == 5
    assert record["settings"]["card"]["pooling"] == "mean" and record["settings"]["queries"] == 2
    assert record["settings"] == cl.cache_settings(queries, 2, str(minilm_dir), 5)


# ------------------------------------------------------------------------------------------------- query keys

@pytest.fixture()
def text_files(tmp_path):
    qfile = tmp_path / "queries.tsv"
    qfile.write_text("11\twhat is x\n12\twhat is y\n13\tunused\n")
    teacher = tmp_path / "teacher.tsv"
    teacher.write_text("3\t1\twhat is x\tp1\tn1\n\nbad line\n2\t1\twhat is y\tp2\tn2\n4\t0\twhat is x\tp3\tn3\n")
    return qfile, teacher


def test_query_keys_of_text_teacher_files(text_files, tmp_path):
    qfile, teacher = text_files
    data = TextTeacherData(teacher, skip_bad=True)
    keys = query_keys(data)
    assert list(keys) == [text_key("what is x"), text_key("what is y"), text_key("what is x")]
    assert text_key("what is x").startswith("kdq-") and len(text_key("what is x")) == 20
    assert query_texts(data, keys) == {text_key("what is x"): "what is x", text_key("what is y"): "what is y"}
    assert list(query_keys(data, qfile)) == ["11", "12", "11"]
    gz = tmp_path / "teacher.tsv.gz"
    gz.write_bytes(gzip.compress(teacher.read_bytes()))
    assert list(query_keys(TextTeacherData(gz, skip_bad=True), qfile)) == ["11", "12", "11"]
    qfile.write_text("11\twhat is x\n")
    with pytest.raises(SamplingError) as e:
        query_keys(data, qfile)
    assert f"1 of 2 query texts of {teacher} are not in {qfile} (first: {teacher}:4: 'what is y')" in _one_line(e)


def test_query_keys_of_jsonl_and_id_teacher_files(tmp_path):
    j = tmp_path / "t.jsonl"
    j.write_text(json.dumps({"query": "q two", "pos": ["p"], "neg": ["n1", "n2"], "pos_scores": [3],
                             "neg_scores": [1, 2]}) + "\n" +
                 json.dumps({"query": "q one", "pos": ["p"], "neg": ["n"], "pos_scores": [1], "neg_scores": [0]}) +
                 "\n")
    data = JsonlTeacherData(j)
    assert list(query_keys(data)) == [text_key("q two")] * 2 + [text_key("q one")]
    qfile = tmp_path / "q.tsv"
    qfile.write_text("7\tq one\n8\tq two\n")
    keys = query_keys(data, qfile)
    assert list(keys) == ["8", "8", "7"] and query_texts(data, keys) == {"8": "q two", "7": "q one"}
    coll = tmp_path / "collection.tsv"
    coll.write_text("".join(f"{i}\tpassage {i}\n" for i in range(5)))
    for qids in (["1000", "1001"], ["q-a", "q-b"]):  # dense integer ids and string ids
        qf = tmp_path / "queries.train.tsv"
        qf.write_text(f"{qids[0]}\tfirst query\n{qids[1]}\tsecond query\n")
        t = tmp_path / "teacher.ids.tsv"
        t.write_text(f"5\t1\t{qids[1]}\t0\t1\n4\t2\t{qids[0]}\t2\t3\n3\t1\t{qids[1]}\t1\t4\n")
        ids = IdTeacherData(t, coll, qf)
        keys = query_keys(ids, "ignored for id files")
        assert list(keys) == [qids[1], qids[0], qids[1]]
        assert query_texts(ids, keys) == {qids[0]: "first query", qids[1]: "second query"}


def test_sampler_over_real_query_keys_of_a_teacher_file(text_files, tmp_path):
    qfile, teacher = text_files
    data = TextTeacherData(teacher, skip_bad=True)
    keys = query_keys(data, qfile)
    cfile = tmp_path / "c.tsv"
    write_query_clusters(cfile, [["12", "11"], ["13"]])
    s = TasBalancedSampler(keys, data.margins(), read_query_clusters(cfile), 2)
    assert s.queries == 1 and s.dropped_queries == 1 and s.unknown_qids == 1  # "12" has one pair; "13" no triple
    assert {int(b[0]) for e in range(50) for b in s.epoch_batches(e, 0)} == {0, 2}
