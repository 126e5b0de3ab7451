"""What a worker advertises: device kind, memory and default queues."""


def test_a_cpu_worker_advertises_the_machine_memory_unless_told_otherwise():
    from core.config import Settings
    from worker.capacity import detect_capacity, machine_memory_bytes
    cpu = detect_capacity(Settings(device="cpu"))
    assert (cpu.device, cpu.memory_bytes, cpu.default_queues) == ("cpu", machine_memory_bytes(), ["cpu"])
    assert machine_memory_bytes() > 2**28
    told = detect_capacity(Settings(device="cuda:1", worker_memory_bytes=80 * 2**30))
    assert (told.device, told.memory_bytes, told.default_queues) == ("gpu", 80 * 2**30, ["gpu", "cpu"])


def test_the_worker_command_refuses_an_unknown_queue(capsys):
    from modelpress.cli import main
    assert main(["worker", "--queues", "gpu,fast"]) == 2
    assert "unknown queue(s) fast" in capsys.readouterr().err
