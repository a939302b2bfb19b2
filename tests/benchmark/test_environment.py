"""The recorded environment: CPU model from /proc/cpuinfo, library versions, guarded probes."""
from benchmark import environment


def test_cpu_model_prefers_model_name_over_the_numeric_model(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9B14\n")
    jetson = tmp_path / "jetson"
    jetson.write_text("processor\t: 0\nBogoMIPS\t: 62.50\nCPU part\t: 0xd42\n\nModel\t: NVIDIA Jetson AGX Orin\n")
    assert environment.cpu_model(str(x86)) == "AMD EPYC 9B14"
    assert environment.cpu_model(str(jetson)) == "NVIDIA Jetson AGX Orin"


def test_environment_records_versions_threads_and_what_is_present():
    from deploy.jetson import is_jetson

    env = environment.collect_environment(threads=2, ort_settings={"threads": 2})
    assert env["threads"] == 2 and env["cpu_cores"] >= 1 and env["cpu"]
    libraries = env["libraries"]
    assert libraries["torch"] and libraries["onnxruntime"] and libraries["onnx"] and libraries["numpy"]
    # TensorRT and a Jetson are recorded as what this machine has: a version / a report there, None elsewhere
    try:
        import tensorrt
        expected = str(getattr(tensorrt, "__version__", "unknown"))
    except Exception:  # absent, or a broken install: both are recorded as None
        expected = None
    assert libraries["tensorrt"] == expected
    assert env["onnxruntime_session"] == {"threads": 2}
    assert (env["jetson"] is not None) == is_jetson()
    if env["jetson"] is None:
        assert env["jetson_power_mode"] is None


def test_pytorchs_openmp_threads_wait_passively_unless_the_user_chose(monkeypatch):
    # libgomp's spinning slowed PyTorch 4-10x on a loaded 2-core machine and took ONNX Runtime's cores (issue 28)
    import os
    import subprocess
    import sys

    from benchmark import openmp
    monkeypatch.setenv(openmp.WAIT_POLICY, "unset")
    monkeypatch.delenv(openmp.WAIT_POLICY)
    assert openmp.wait_passively() == "PASSIVE" and openmp.wait_policy() == "PASSIVE"
    monkeypatch.setenv(openmp.WAIT_POLICY, "ACTIVE")
    assert openmp.wait_passively() == "ACTIVE" and environment.collect_environment()["omp_wait_policy"] == "ACTIVE"
    # cli.py sets it before any command can import torch
    env = {k: v for k, v in os.environ.items() if k != openmp.WAIT_POLICY}
    probe = "import os, sys, cli; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(environment.__file__)))
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=root, stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout.split()
    assert out == ["PASSIVE", "False"]
