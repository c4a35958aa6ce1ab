"""The benchmarks run end to end (their smallest configurations); timings are never asserted."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flop_count_is_exact():
    bench = load("bench_epoch")
    assert bench.flops_per_example((784, 100, 10)) == 319_600  # forward 158,800 + weights 158,800 + errors 2,000
    assert bench.flops_per_example((2, 3)) == 2 * 6 + 2 * 6  # one layer: no error is sent back to the input
    assert bench.flops_per_example((4, 5, 6, 7)) == 4 * (20 + 30 + 42) + 2 * (30 + 42)


def test_step_products_make_exactly_the_counted_flops(monkeypatch):
    bench = load("bench_epoch")
    flops, real = [], np.matmul

    def counting(a, b):
        flops.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
        return real(a, b)

    monkeypatch.setattr(np, "matmul", counting)
    out = bench.step_products("numpy", 7)()
    assert sum(flops) == bench.flops_per_example(bench.SIZES) * 7 and len(out) == 3 * (len(bench.SIZES) - 1) - 1


def test_bench_epoch_quick_smallest_configuration_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")  # the benchmark sets JAX's thread flags; keep them out of other tests
    bench = load("bench_epoch")
    out = tmp_path / "epoch.json"
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    result = bench.main(["--quick", "--n", "64", "--batch-sizes", "n", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["flops_per_example"] == 319_600 and saved["rounds"] == {"warmup": 1, "kept": 1}
    assert "sgdlab" in saved["peers"] and set(saved["peers"]) | set(saved["skipped"]) == set(bench.PEERS)
    (row,) = saved["rows"]
    assert row["batch_size"] == 64 and row["updates_per_epoch"] == 1
    for p in saved["peers"]:
        assert row[p]["median_s"] > 0 and len(row[p]["all_s"]) == 1 and row[p]["gflops"] > 0
    assert saved["sgemm_gflops"]["median"] > 0 and saved["threads"]["threads"] == 1
    # the roof: every library's GEMM (NumPy's always, PyTorch's and JAX's with their peers), the best of them
    g = saved["sgemm_gflops"]
    expected = {"numpy"} | {bench.MODULES[p] for p in saved["peers"] if bench.MODULES.get(p) in ("torch", "jax")}
    assert set(g["by_library"]) == expected and all(set(r) == expected for r in g["per_round"] + g["warmup"])
    assert g["median"] == max(g["by_library"].values()) == g["by_library"][g["library"]]
    for p in saved["peers"]:
        assert row[p]["fraction_of_sgemm"] == pytest.approx(row[p]["gflops"] / g["median"])
    assert row["sgdlab"]["fraction_of_numpy_sgemm"] == pytest.approx(row["sgdlab"]["gflops"] / g["by_library"]["numpy"])
    sp = saved["step_products_gflops"]
    assert set(sp["by_library"]) == expected and sp["rows"] == 64
    assert sp["median"] == max(sp["by_library"].values()) == sp["by_library"][sp["library"]]
    assert row["sgdlab"]["fraction_of_step_products"] == pytest.approx(row["sgdlab"]["gflops"] / sp["median"])
    assert saved["machine"]["blas_env"]["XLA_FLAGS"] == os.environ["XLA_FLAGS"]  # the flags the run set
    if hasattr(os, "sched_getaffinity"):  # pinned to one CPU while it ran, and given the CPUs back after
        assert len(saved["threads"]["pinned_cpus"]) == 1 and os.sched_getaffinity(0) == cpus
    assert all(row[p]["cpu_per_wall"] < 1.5 for p in saved["peers"])  # pinned to one CPU: at most ~1 CPU s per s
    assert saved["load_before"] is None or len(saved["load_before"]) == 3
    assert saved["machine"]["cpu"] and any(v.startswith("full batch (B=64)") for v in saved["verdicts"])
    assert result["rows"][0]["sgdlab"]["median_s"] == row["sgdlab"]["median_s"]


def test_machine_records_the_blas_settings_of_the_environment(monkeypatch):
    from sgdlab import machine

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("SGDLAB_NOT_A_BLAS_SETTING", "x")
    env = machine.describe()["blas_env"]
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OMP_NUM_THREADS"] == "3"
    assert "SGDLAB_NOT_A_BLAS_SETTING" not in env


def test_machine_reads_the_cpus_vendor_family_and_model(tmp_path):
    """Two CPU generations a virtual machine names alike ("AMD EPYC") are told apart by family and model."""
    from sgdlab import machine

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\ncpu family\t: 99\n")
    assert machine.cpu_id(str(info)) == "AuthenticAMD family 25 model 17 stepping 1"
    assert machine.cpu_family(str(info)) == ("AuthenticAMD", 25)
    info.write_text("processor\t: 0\nmodel name\t: some ARM core\n")
    assert machine.cpu_id(str(info)) is None and machine.cpu_family(str(info)) is None
    assert machine.cpu_id(str(tmp_path / "absent")) is None and machine.cpu_family(str(tmp_path / "absent")) is None
    assert "cpu_id" in machine.describe()


def test_bench_epoch_refuses_unknown_peers(tmp_path):
    bench = load("bench_epoch")
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--peers", "sgdlab,caffe", "--out", str(tmp_path / "x.json")])


def test_bench_out_of_core_smallest_configuration_end_to_end(tmp_path):
    bench = load("bench_out_of_core")
    out = tmp_path / "ooc.json"
    record = bench.main(["--rows", "3000", "--dir", str(tmp_path / "data"), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == 3000 and saved["same_parameters_disk_and_ram"] is True
    assert set(saved["runs"]) == {"ram", "disk", "disk_noprefetch", "disk_chunk"}
    assert all(r[0]["rows"] == 3000 and r[0]["cpu_us_per_example"] > 0 for r in saved["runs"].values())
    assert saved["cold"]["reshuffle_rows_per_second"] > 0 and "load_before" in saved
    assert not (tmp_path / "data").exists()  # the data set is deleted unless --keep
    assert record["fraction_of_ram"]["ram"] == 1.0


def test_bench_eval_cost_smallest_configuration_end_to_end(tmp_path):
    """Both trees (here this one twice), every mode, in fresh processes; the default evaluates the training set
    at the ends only, in the tree that has mean_batch_cost."""
    bench = load("bench_eval_cost")
    out = tmp_path / "eval.json"
    record = bench.main(["--before", str(BENCH.parent / "src"), "--rounds", "1", "--epochs", "3", "--n", "64",
                         "--batch-sizes", "1,64", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["summary"] == record["summary"] and saved["machine"]["cpu"]
    assert sorted(saved["summary"]) == sorted(f"{tree}/{m}/{mode}" for m in (1, 64) for tree, modes in
                                              (("before", ("default", "no_eval", "no_eval_costs")),
                                               ("after", ("default", "no_eval", "no_eval_nocosts"))) for mode in modes)
    (before, after) = sorted(saved["runs"], key=lambda r: r["tree"] != "before")
    assert after["results"]["64/default"]["train_cost_epochs"] == [0, 3] and after["results"]["64/default"][
        "mean_batch_cost"]
    assert len(after["load_before"]) == 3 and all(c["epoch_wall_s"]["median"] > 0 for c in saved["summary"].values())


def test_bench_batch1_smallest_configuration_end_to_end(tmp_path):
    pytest.importorskip("numba")
    from sgdlab.steppers import compiled

    bench = load("bench_batch1")
    threshold, aligned = compiled.ROW_COLUMNS_MAX_SKIP, compiled.aligned_zeros
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        out = tmp_path / "batch1.json"
        bench.main(["--rounds", "1", "--epochs", "2", "--n", "40", "--skips", "0.5", "--placement", "--out", str(out)])
    finally:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
    assert (compiled.ROW_COLUMNS_MAX_SKIP, compiled.aligned_zeros) == (threshold, aligned)  # given back
    saved = json.loads(out.read_text())
    assert [r["data"] for r in saved["rows"]][:2] == ["dense", "zeros, skip 0.5"]
    assert abs(saved["rows"][1]["skip_fraction"] - 0.5) < 0.15  # zeros at rate sqrt(0.5): p^2 = 0.5 expected
    for row in saved["rows"]:
        assert set(row) >= {"rows", "columns", "rows16", "columns16"}
        assert all(row[m]["median_ms"] > 0 and len(row[m]["all_ms"]) == 1 for m in ("rows", "columns"))
    assert saved["load_before"] is not None or not hasattr(os, "getloadavg")
    assert bench.past_a_line(1000, "float32").ctypes.data % 64 == 16


@pytest.mark.parametrize("product", ["forward", "gradient"])
def test_bench_forward_smallest_configuration_end_to_end(tmp_path, product):
    pytest.importorskip("numba")
    from sgdlab.steppers import compiled

    if compiled.gemm_address("float32") is None:
        pytest.skip("NumPy's BLAS exports no CBLAS gemm with 64-bit integers here")
    bench = load("bench_forward")
    settings = {name: getattr(compiled, name) for name in bench.SETTINGS}
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    out = tmp_path / f"{product}.json"
    try:
        result = bench.main(["--product", product, "--rounds", "1", "--epochs", "2", "--n", "40", "--batch-sizes",
                             "4,n", "--out", str(out)])
    finally:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
    assert {name: getattr(compiled, name) for name in bench.SETTINGS} == settings  # given back
    if not compiled.wide_vector_code():
        assert result == {} and not out.exists()
        return
    saved = json.loads(out.read_text())
    assert [r["batch_size"] for r in saved["rows"]] == [4, 40] and saved["product"] == product
    for row in saved["rows"]:
        assert all(row[m]["median_ms"] > 0 and len(row[m]["all_ms"]) == 1 for m in ("tiles", "gemm"))
        assert row["gemm_over_tiles"] == row["gemm"]["median_ms"] / row["tiles"]["median_ms"]
