"""PromptKD against independent computations: the projector's layers and counts (ViT-B/16 student, ViT-L/14
teacher widths), the KD loss, the student's logits against the teacher's class features, which tensors learn,
the teacher's passes (text once per class set, image once per training view), the export without the teacher,
and the errors that name the fix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method
from prompt_learning.methods.promptkd import FeatureProjector, PromptKD, kd_loss, load_teacher
from prompt_learning.prompts.deep import split_input_layer

from ..conftest import CLASSES, UNSEEN


class Classes:
    train_classes = CLASSES


def student(tiny_backbone, kd_teacher, **cfg) -> PromptKD:
    torch.manual_seed(0)
    method = create_method({"name": "promptkd", "depth_vision": 2, **kd_teacher, **cfg}, tiny_backbone, CLASSES)
    method.prepare(Classes())
    return method


def test_projector_layers_and_parameter_count_for_vit_b16_to_vit_l14() -> None:
    projector = FeatureProjector(512, 768)
    assert projector.expand.weight.shape == (768, 512, 1, 1) and projector.mix.weight.shape == (768, 768, 1, 1)
    assert sum(p.numel() for p in projector.parameters()) == 512 * 768 + 768 + 768 * 768 + 768 + 2 * 768  # 986,112
    assert sum(b.numel() for n, b in projector.named_buffers() if "running" in n) == 2 * 768
    features = torch.randn(5, 512)
    projector.eval()
    maps = features[:, :, None, None]
    expected = projector.mix(F.relu(projector.norm(projector.expand(maps)))).flatten(1)
    linear = features @ projector.expand.weight.flatten(1).T + projector.expand.bias  # a 1x1 conv is a linear map
    norm = projector.norm
    linear = (linear - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias
    linear = F.relu(linear) @ projector.mix.weight.flatten(1).T + projector.mix.bias
    torch.testing.assert_close(projector(features), expected)
    torch.testing.assert_close(projector(features), linear, atol=1e-5, rtol=1e-5)


def test_student_parameters_on_vit_b16(vit_b16, kd_teacher) -> None:
    """IVLP vision prompts 9 x 4 x 768 = 27,648 plus the projector 512 -> 768 (986,112): 1,013,760."""
    method = create_method({"name": "promptkd", **kd_teacher, "teacher_dim": 768, "teacher": {"dim": 768}}, vit_b16,
                           CLASSES)
    assert sum(p.numel() for p in method.vision_prompts.parameters()) == 27_648
    assert sum(p.numel() for p in method.parameters()) == 1_013_760


def test_kd_loss_is_the_official_kl_div_sum_over_numel() -> None:
    gen = torch.Generator().manual_seed(0)
    student_logits, teacher_logits = torch.randn(6, 10, generator=gen), torch.randn(6, 10, generator=gen) * 3
    for t in (1.0, 2.0):
        official = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                            reduction="sum") * t * t / student_logits.numel()
        torch.testing.assert_close(kd_loss(student_logits, teacher_logits, t), official)
    assert kd_loss(teacher_logits, teacher_logits, 1.0).abs() < 1e-6


def test_logits_score_the_projected_student_against_the_teacher_features(tiny_backbone, kd_teacher, images) -> None:
    method = student(tiny_backbone, kd_teacher).eval()
    teacher = load_teacher(kd_teacher["teacher_export"], kd_teacher["teacher_checkpoint"])
    with torch.no_grad():
        t = teacher.encode_classes(CLASSES)  # (C, 48)
        first, deep = split_input_layer(method.vision_prompts())
        u = F.normalize(method.projector(tiny_backbone.encode_image(images, first, deep).float()), dim=-1)
        expected = tiny_backbone.logit_scale * u @ t.T
        torch.testing.assert_close(method.teacher_text_features, t)
        torch.testing.assert_close(method(images, CLASSES).logits, expected, atol=1e-5, rtol=1e-5)
    assert method.teacher_text_features.shape == (len(CLASSES), 48) and method.cfg.teacher_dim == 48


def test_training_step_distils_the_teacher_and_reads_no_label(tiny_backbone, kd_teacher, images) -> None:
    method = student(tiny_backbone, kd_teacher).train()
    teacher = method.teacher()
    out = method(images, CLASSES)
    with torch.no_grad():
        z_t = teacher(images, CLASSES, method.teacher_text_features).logits
    torch.testing.assert_close(out.extras["teacher_logits"], z_t)
    loss = method.loss(out, torch.full((3,), -1))
    torch.testing.assert_close(loss["kd"], 1000 * kd_loss(out.logits, z_t, 1.0))
    assert set(loss) == {"kd"}
    torch.testing.assert_close(method.loss(out, torch.tensor([0, 1, 2]))["kd"], loss["kd"])  # labels are not read
    loss["kd"].backward()
    learned = dict(method.named_parameters())
    assert learned and all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned.values())
    assert all(p.grad is None for p in [*teacher.parameters(), *teacher.backbone.parameters(),
                                        *tiny_backbone.parameters()])


def test_reduced_kd_weight_for_the_datasets_the_official_scripts_name(tiny_backbone, kd_teacher, images) -> None:
    method = student(tiny_backbone, kd_teacher).train()
    dtd = type(CLASSES)(CLASSES.names, CLASSES.template, "dtd")
    out = method(images, dtd)
    assert torch.allclose(method.loss(out, torch.zeros(3, dtype=torch.long))["kd"],
                          200 * kd_loss(out.logits, out.extras["teacher_logits"], 1.0))


def test_teacher_text_once_per_class_set_and_its_image_tower_once_per_view(tiny_backbone, kd_teacher, images,
                                                                           monkeypatch) -> None:
    method = student(tiny_backbone, kd_teacher).train()
    teacher = method.teacher()
    calls = {"text": 0, "image": 0}
    encode_classes, encode_images = teacher.encode_classes, teacher.encode_images
    monkeypatch.setattr(teacher, "encode_classes", lambda *a, **k: calls.__setitem__("text", calls["text"] + 1)
                        or encode_classes(*a, **k))
    monkeypatch.setattr(teacher, "encode_images", lambda *a, **k: calls.__setitem__("image", calls["image"] + 1)
                        or encode_images(*a, **k))
    for _ in range(3):
        method(images, CLASSES)
    assert calls == {"text": 0, "image": 3}  # the trained classes' features were stored by prepare
    method.eval()
    for _ in range(2):
        method(images, UNSEEN)
    assert calls == {"text": 1, "image": 3}  # new names: the teacher's text tower once; evaluation: no teacher image


def test_export_scores_its_classes_without_the_teacher_and_names_it_for_new_ones(tiny_backbone, kd_teacher, images,
                                                                                 tmp_path) -> None:
    method = student(tiny_backbone, kd_teacher).eval()
    save_export(tmp_path, method, {"epochs": 1})
    config = (tmp_path / "prompt_config.json").read_text()
    assert '"teacher_dim": 48' in config and "tiny_test_wide" in config
    reloaded = load_method(tmp_path, tiny_backbone).eval()
    reloaded.cfg.teacher_export = ""  # elsewhere: no teacher
    torch.testing.assert_close(reloaded(images, CLASSES).logits, method(images, CLASSES).logits)
    torch.testing.assert_close(reloaded(images, type(CLASSES)(CLASSES.names[2:])).logits,
                               method(images, CLASSES).logits[:, 2:])  # a subset (new classes) of the trained set
    with pytest.raises(ConfigurationError, match="teacher_export"):
        reloaded(images, UNSEEN)


def test_missing_teacher_is_a_setup_error(tiny_backbone) -> None:
    with pytest.raises(ConfigurationError, match="method.teacher_export"):
        create_method({"name": "promptkd"}, tiny_backbone, CLASSES)


def test_teacher_with_other_preprocessing_is_refused(kd_teacher) -> None:
    torch.manual_seed(0)
    synthetic = FrozenCLIP("tiny_synthetic", "packaged")  # 64 px, the teacher reads 32 px images
    method = create_method({"name": "promptkd", **kd_teacher}, synthetic, CLASSES)
    with pytest.raises(ConfigurationError, match="preprocess"):
        method.prepare(Classes())
