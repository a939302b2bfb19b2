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



def test_the_pytorch_openmp_wait_policy_is_recorded_and_left_to_the_user(monkeypatch):
    # a speed-up is against PyTorch's own speed: the policy is the user's, and every benchmark says which it was
    from benchmark import openmp
    monkeypatch.setenv(openmp.WAIT_POLICY, "PASSIVE")
    assert environment.collect_environment()["omp_wait_policy"] == "PASSIVE"
    monkeypatch.delenv(openmp.WAIT_POLICY)
    assert environment.collect_environment()["omp_wait_policy"] == "default (spin, then sleep)"
