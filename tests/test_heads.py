"""The growing classifier head (``clpet.heads``)."""


def test_a_head_grown_after_the_module_moved_lands_on_its_device_and_dtype():
    """The first head of a run is grown after ``Method.setup`` moved the method to the run device (LAE, finetune,
    joint, ConPET): it must land there, not on the CPU. The meta device stands in for a GPU here."""
    import torch

    from clpet.heads import IncrementalLinear

    head = IncrementalLinear(4).to("meta")
    first = head.grow(3)
    assert first.weight.device.type == "meta" and head.grow(2).bias.device.type == "meta"
    assert "_anchor" not in head.state_dict()  # checkpoints unchanged
    half = IncrementalLinear(4).to(torch.bfloat16)
    assert half.grow(2).weight.dtype == torch.bfloat16
