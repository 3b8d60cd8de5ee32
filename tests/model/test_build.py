import huggingface_hub
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file
from torch import nn

from sever.config import ModelConfig
from sever.errors import CheckpointError, ConfigError
from sever.model.build import build_model, encoder_and_rest, split_outputs, use_one_channel
from sever.model.catalogue import ARCHITECTURES, check_encoder

CHANNEL_SLICES = {"r": slice(0, 1), "g": slice(1, 2), "b": slice(2, 3)}


def config(**kwargs) -> ModelConfig:
    return ModelConfig(**{"encoder": "resnet18", "encoder_weights": None, **kwargs})


def one_channel(weight: torch.Tensor, channel: str) -> torch.Tensor:
    """The expected 1-channel filters from 3-channel ones (out, 3, k, k)."""
    if channel == "sum":
        return weight.sum(1, keepdim=True)
    return weight[:, CHANNEL_SLICES[channel]]


def saved_encoder(path, seed: int = 0, name: str = "resnet18") -> dict[str, torch.Tensor]:
    """Save a randomly initialised 3-channel SMP encoder's state dict to `path`."""
    torch.manual_seed(seed)
    state = smp.encoders.get_encoder(name, in_channels=3, weights=None).state_dict()
    torch.save(state, path)
    return state


@pytest.mark.parametrize("arch", ["Unet", "FPN"])
def test_mask_logits_have_the_input_size(arch):
    model = build_model(config(arch=arch)).eval()
    with torch.no_grad():
        masks, labels = split_outputs(model(torch.randn(1, 1, 64, 64)))
    assert masks.shape == (1, 4, 64, 64)
    assert labels is None


@pytest.mark.parametrize("arch", ["Unet", "FPN"])
def test_class_head_gives_one_logit_per_class(arch):
    model = build_model(config(arch=arch, class_head={"enabled": True})).eval()
    with torch.no_grad():
        output = model(torch.randn(1, 1, 64, 64))
    masks, labels = split_outputs(output)
    assert isinstance(output, tuple)
    assert masks.shape == (1, 4, 64, 64)
    assert labels.shape == (1, 4)


@pytest.mark.parametrize("channel", ["r", "g", "b", "sum"])
def test_first_conv_keeps_the_chosen_pretrained_channel(channel):
    # The same seed and constructor arguments give the same 3-channel filters.
    torch.manual_seed(0)
    model = build_model(config(input_channel=channel))
    torch.manual_seed(0)
    reference = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=4)
    conv = model.encoder.conv1
    assert conv.in_channels == 1
    assert torch.equal(conv.weight, one_channel(reference.encoder.conv1.weight, channel))


def test_sum_on_grey_input_equals_the_3_channel_encoder():
    torch.manual_seed(0)
    model = build_model(config(input_channel="sum")).eval()
    torch.manual_seed(0)
    reference = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=4).eval()
    grey = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ours = model.encoder(grey)[-1]
        theirs = reference.encoder(grey.expand(-1, 3, -1, -1))[-1]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_use_one_channel_keeps_the_bias_and_the_conv_class():
    conv = nn.Conv2d(3, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(6.0).view(2, 3, 1, 1))
    bias = conv.bias.detach().clone()
    use_one_channel(conv, "b")
    assert conv.weight.flatten().tolist() == [2.0, 5.0]
    assert torch.equal(conv.bias, bias)
    assert conv(torch.ones(1, 1, 4, 4)).shape == (1, 2, 4, 4)


def test_unet_dropout_sits_in_front_of_the_head_and_keeps_parameter_names():
    plain = build_model(config(arch="Unet"))
    model = build_model(config(arch="Unet", dropout=0.3))
    first = model.segmentation_head[0]
    assert isinstance(first, nn.Dropout2d) and first.p == 0.3
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert not any(isinstance(m, nn.Dropout2d) for m in plain.modules())


def test_fpn_uses_its_own_decoder_dropout():
    model = build_model(config(arch="FPN", dropout=0.3))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert [d.p for d in dropouts] == [0.3]
    assert any(d is model.decoder.dropout for d in dropouts)


@pytest.mark.parametrize("channel", ["r", "g", "b", "sum"])
def test_local_weights_file_loads_into_the_encoder(tmp_path, channel):
    path = tmp_path / "resnet18.pth"
    state = saved_encoder(path)
    model = build_model(config(encoder_weights=str(path), input_channel=channel))
    loaded = model.encoder.state_dict()
    assert torch.equal(loaded["conv1.weight"], one_channel(state["conv1.weight"], channel))
    for key in state.keys() - {"conv1.weight"}:
        assert torch.equal(loaded[key], state[key]), key


def test_local_weights_accept_wrapped_and_safetensors_files(tmp_path):
    state = saved_encoder(tmp_path / "plain.pth")
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    safe = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, safe)
    for path in (wrapped, safe):
        model = build_model(config(encoder_weights=str(path), input_channel="r"))
        assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_weights_of_another_encoder_raise_checkpoint_error(tmp_path):
    path = tmp_path / "resnet34.pth"
    saved_encoder(path, name="resnet34")
    with pytest.raises(CheckpointError, match=r"resnet34\.pth: does not fit encoder resnet18: "):
        build_model(config(encoder_weights=str(path)))


def test_missing_keys_are_counted(tmp_path):
    path = tmp_path / "partial.pth"
    state = saved_encoder(path)
    del state["bn1.bias"], state["bn1.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"2 missing keys \(e.g. 'bn1.bias'\)"):
        build_model(config(encoder_weights=str(path)))


def test_unreadable_weights_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth: cannot read weights"):
        build_model(config(encoder_weights=str(path)))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache with downloads switched off."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_imagenet_weights_offline_say_where_to_put_them(offline_hub):
    with pytest.raises(CheckpointError) as error:
        build_model(config(encoder_weights="imagenet"))
    message = str(error.value)
    assert "smp-hub/resnet18.imagenet" in message and str(offline_hub) in message
    assert "\n" not in message


def test_imagenet_weights_come_from_the_hugging_face_cache(offline_hub, tmp_path):
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = offline_hub / "models--smp-hub--resnet18.imagenet" / "snapshots"
    snapshot = snapshot / settings["revision"]
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    state = saved_encoder(tmp_path / "unused.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    model = build_model(config(encoder_weights="imagenet", input_channel="g"))
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"][:, 1:2])


def test_an_impossible_combination_is_a_config_error():
    with pytest.raises(ConfigError, match="DPT with encoder resnet18"):
        build_model(config(arch="DPT"))


@pytest.mark.parametrize(
    "name", ["efficientnet-b5", "se_resnext50_32x4d", "inceptionv4", "resnet18", "tu-resnet18"]
)
def test_known_encoders_pass(name):
    assert check_encoder(name) == name


def test_unknown_encoder_suggests_the_closest():
    with pytest.raises(ValueError, match="unknown encoder 'resnet181' \\(did you mean 'resnet18'"):
        check_encoder("resnet181")


def test_architectures_are_smp_class_names():
    expected = {"Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3Plus", "Linknet", "MAnet"}
    assert expected <= set(ARCHITECTURES)
    assert ARCHITECTURES["FPN"] is smp.FPN


def test_encoder_and_rest_split_all_parameters():
    model = build_model(config(class_head={"enabled": True}))
    encoder, rest = encoder_and_rest(model)
    assert {id(p) for p in encoder} == {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in rest)
    assert len(encoder) + len(rest) == len(list(model.parameters()))
    assert any(p is model.classification_head[3].weight for p in rest)


def test_classifier_gives_class_logits_alone():
    model = build_model(config(class_head={"pooling": "max"}), task="classify").eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1, 64, 128))
    masks, labels = split_outputs(output)
    assert masks is None
    assert labels.shape == (2, 4)
    assert not hasattr(model, "decoder")  # the encoder and a pooled head, nothing more
    encoder, rest = encoder_and_rest(model)
    assert {id(p) for p in rest} == {id(p) for p in model.classification_head.parameters()}


def test_classifier_local_weights_and_channel(tmp_path):
    state = saved_encoder(tmp_path / "w.pth")
    model = build_model(
        config(encoder_weights=str(tmp_path / "w.pth"), input_channel="g"), task="classify"
    )
    assert torch.equal(model.encoder.conv1.weight, one_channel(state["conv1.weight"], "g"))
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_arch_params_reach_the_smp_constructor():
    model = build_model(
        config(
            arch="FPN",
            arch_params={"decoder_pyramid_channels": 64, "decoder_segmentation_channels": 32},
        )
    )
    # the head's one conv maps the 32 segmentation channels to the 4 classes
    assert model.segmentation_head[0].in_channels == 32
    pyramid = [m for m in model.decoder.modules() if isinstance(m, nn.Conv2d)][0]
    assert pyramid.out_channels == 64
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 4, 64, 64)


def test_unet_takes_scse_attention_from_arch_params():
    model = build_model(config(arch="Unet", arch_params={"decoder_attention_type": "scse"}))
    plain = build_model(config(arch="Unet"))
    names = {type(m).__name__ for m in model.modules()}
    assert "SCSEModule" in names and "SCSEModule" not in {type(m).__name__ for m in plain.modules()}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"decoder_pyramid_chanels": 64},
            "unknown FPN argument 'decoder_pyramid_chanels' "
            "\\(did you mean 'decoder_pyramid_channels'\\?\\)",
        ),
        (
            {"decoder_pyramid_channels": "wide"},
            "decoder_pyramid_channels: expected int, got 'wide'",
        ),
        ({"decoder_pyramid_channels": True}, "decoder_pyramid_channels: expected int, got True"),
        ({"classes": 3}, "'classes' is set by sever \\(model.classes\\); remove it"),
        ({"decoder_dropout": 0.2}, "'decoder_dropout' is set by sever \\(model.dropout\\)"),
    ],
)
def test_arch_params_are_checked_with_the_config(params, message):
    with pytest.raises(ValueError, match=message):
        config(arch="FPN", arch_params=params)


def test_unknown_arch_params_do_not_list_what_sever_sets():
    with pytest.raises(ValueError, match="unknown FPN argument") as caught:
        config(arch="FPN", arch_params={"x": 1})
    listed = str(caught.value).split("expected one of: ")[1].split(", ")
    assert "decoder_pyramid_channels" in listed and "encoder_depth" in listed
    assert not {"classes", "encoder_name", "in_channels", "decoder_dropout"} & set(listed)


def test_an_arch_param_value_smp_refuses_is_a_config_error():
    with pytest.raises(ConfigError, match="model: FPN with encoder resnet18: `merge_policy`"):
        build_model(config(arch="FPN", arch_params={"decoder_merge_policy": "mul"}))


def test_arch_params_that_build_a_model_that_cannot_run_are_a_config_error():
    # SMP's scse block squeezes channels by 16: a last decoder block of 8 has none left
    params = {"decoder_channels": [64, 32, 16, 8, 8], "decoder_attention_type": "scse"}
    with pytest.raises(ConfigError, match="model.arch_params: Unet with .* cannot run"):
        build_model(config(arch="Unet", arch_params=params))
    params["decoder_channels"] = [64, 32, 16, 16, 16]
    assert build_model(config(arch="Unet", arch_params=params)).training
