"""Readers for Helen, COFW, CelebA/MAFL, AFLW and the 300-W subsets, and their landmark schemes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.formats.aflw import AFLW_21, read_aflw, read_aflw_points
from tcdcn.data.formats.celeba import (
    CELEBA_ATTRIBUTE_TASKS,
    CELEBA_TASK_NAMES,
    read_celeba,
)
from tcdcn.data.formats.cofw import COFW_29, load_cofw_arrays, read_cofw
from tcdcn.data.formats.helen import (
    HELEN_194,
    HELEN_PART_RANGES,
    HELEN_PARTS,
    derive_flip_pairs,
    left_right_agreement,
    read_helen,
    read_helen_folder,
)
from tcdcn.data.formats.pts import read_pts_folder
from tcdcn.data.formats.w300 import W300_SUBSETS, read_300w
from tcdcn.errors import AnnotationError
from tcdcn.schemes import IBUG_68, LandmarkScheme, get_scheme

SHARED_300W = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "300w"

CELEBA_40 = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
    "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
    "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
    "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def _image(path: Path, w: int = 8, h: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (120, 80, 40)).save(path)
    return path


# ----- synthetic symmetric faces, one per scheme (x = 0 on the midline) -------------------------

def _ellipse(cx: float, cy: float, a: float, b: float, n: int) -> np.ndarray:
    """n points from the image-left end, over the top (y down), round to the start."""
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([cx - a * np.cos(t), cy - b * np.sin(t)], axis=1)


def _arc(n: int, half_width: float, y0: float, depth: float) -> np.ndarray:
    """An open curve symmetric about x = 0, from image-left to image-right, evenly spaced in x."""
    x = np.linspace(-half_width, half_width, n)
    return np.stack([x, y0 + depth * (1 - (x / half_width) ** 2)], axis=1)


def synthetic_helen() -> np.ndarray:
    parts = {
        "contour": _arc(41, 60, 0, 70),
        "nose": _arc(17, 12, 20, 6),
        "outer_lip_upper": _arc(14, 25, 45, -6),
        "outer_lip_lower": _arc(14, 25, 45, 8)[::-1],
        "inner_lip_upper": _arc(14, 18, 46, -2),
        "inner_lip_lower": _arc(14, 18, 46, 3)[::-1],
        "eye_image_left": _ellipse(-25, -10, 10, 4, 20),
        "eye_image_right": _ellipse(25, -10, 10, 4, 20),
        "brow_image_left": _ellipse(-25, -25, 14, 3, 20),
        "brow_image_right": _ellipse(25, -25, 14, 3, 20),
    }
    shape = np.zeros((194, 2))
    for name, r in HELEN_PART_RANGES.items():
        shape[list(r)] = parts[name]
    return shape + np.array([100.0, 100.0])


# Hand-placed frontal faces: (x from the midline, negative = image left; y down), by point name.
_COFW_FACE = {
    "left_brow_outer": (-40, -30), "left_brow_inner": (-12, -30), "left_brow_top": (-26, -35),
    "left_brow_bottom": (-26, -27), "left_eye_outer": (-36, -15), "left_eye_inner": (-16, -15),
    "left_eye_top": (-26, -19), "left_eye_bottom": (-26, -11), "left_pupil": (-26, -15),
    "left_nostril": (-10, 12), "nose_tip": (0, 8), "nose_bottom": (0, 14), "mouth_left": (-20, 30),
    "upper_lip_top": (0, 26), "upper_lip_bottom": (0, 29), "lower_lip_top": (0, 31),
    "lower_lip_bottom": (0, 35), "chin": (0, 60),
}
_AFLW_FACE = {
    "left_brow_left": (-40, -30), "left_brow_centre": (-28, -34), "left_brow_right": (-12, -30),
    "left_eye_left": (-36, -15), "left_eye_centre": (-26, -15), "left_eye_right": (-16, -15),
    "left_ear": (-60, 0), "nose_left": (-10, 12), "nose_centre": (0, 8), "mouth_left": (-20, 30),
    "mouth_centre": (0, 32), "chin_centre": (0, 60),
}


def _mirror_name(name: str) -> str:
    """left <-> right in a point name (AFLW names both the brow/eye and the corner by side)."""
    return name.replace("left", "@").replace("right", "left").replace("@", "right")


def _named_symmetric(scheme: LandmarkScheme) -> np.ndarray:
    table = {"cofw-29": _COFW_FACE, "aflw-21": _AFLW_FACE}[scheme.name]
    full = dict(table)
    for name, (x, y) in table.items():
        if x != 0:
            full[_mirror_name(name)] = (-x, y)
    assert set(full) == set(scheme.point_names)
    return np.array([full[n] for n in scheme.point_names], dtype=np.float64) + np.array([100.0, 100.0])


SYMMETRIC = {
    "helen-194": synthetic_helen,
    "cofw-29": lambda: _named_symmetric(COFW_29),
    "aflw-21": lambda: _named_symmetric(AFLW_21),
}
NEW_SCHEMES = (HELEN_194, COFW_29, AFLW_21)


@pytest.mark.parametrize("scheme", NEW_SCHEMES, ids=lambda s: s.name)
def test_scheme_registered_and_flip_is_involution(scheme: LandmarkScheme) -> None:
    assert get_scheme(scheme.name) is scheme
    flat = [i for pair in scheme.flip_pairs for i in pair]
    assert len(flat) == len(set(flat)), "an index is in two flip pairs"
    perm = scheme.flip_index
    assert sorted(perm.tolist()) == list(range(scheme.num_points))
    assert np.array_equal(perm[perm], np.arange(scheme.num_points))
    assert len(scheme.point_names) == len(set(scheme.point_names))


@pytest.mark.parametrize("scheme", NEW_SCHEMES, ids=lambda s: s.name)
def test_five_point_groups_mirror_consistently(scheme: LandmarkScheme) -> None:
    groups = [set(g) for g in scheme.five_point_groups]
    assert len(groups) == 5
    perm = scheme.flip_index
    mirrored = [{int(perm[i]) for i in g} for g in groups]
    assert mirrored[0] == groups[1] and mirrored[1] == groups[0]  # eyes swap
    assert mirrored[2] == groups[2]  # nose tip on the midline
    assert mirrored[3] == groups[4] and mirrored[4] == groups[3]  # mouth corners swap
    if scheme.outer_eye_corners is not None:
        a, b = scheme.outer_eye_corners
        assert perm[a] == b


@pytest.mark.parametrize("scheme", NEW_SCHEMES, ids=lambda s: s.name)
def test_mirroring_symmetric_face_maps_onto_itself(scheme: LandmarkScheme) -> None:
    face = SYMMETRIC[scheme.name]()
    width = 200.0
    mirrored = face.copy()
    mirrored[:, 0] = width - face[:, 0]
    np.testing.assert_allclose(mirrored[scheme.flip_index], face, atol=1e-9)
    # and the five points come out image-left first
    five = scheme.five_points(face)
    assert five[0, 0] < five[2, 0] < five[1, 0]
    assert five[3, 0] < five[4, 0]
    assert five[0, 1] < five[2, 1] < five[3, 1]  # eyes above the nose above the mouth
    fa = FaceAnnotation(Path("x.png"), face, scheme)
    assert left_right_agreement([fa]) == 1.0


def test_mirroring_detects_a_wrong_pair() -> None:
    # the check above is able to fail: swap two pairs' partners and mirroring no longer matches
    bad = LandmarkScheme("bad-aflw", AFLW_21.point_names, ((0, 4), (1, 5)) + AFLW_21.flip_pairs[2:],
                         AFLW_21.five_point_groups)
    face = _named_symmetric(AFLW_21)
    mirrored = face.copy()
    mirrored[:, 0] = 200.0 - face[:, 0]
    assert not np.allclose(mirrored[bad.flip_index], face)


def test_helen_flip_pairs_match_geometric_derivation() -> None:
    derived = derive_flip_pairs(synthetic_helen(), HELEN_PARTS)
    assert sorted(derived) == sorted(HELEN_194.flip_pairs)
    # contour 20 pairs, nose 8, four lip curves 7 each, eyes and brows 20 each
    assert len(HELEN_194.flip_pairs) == 20 + 8 + 4 * 7 + 2 * 20


def test_derive_flip_pairs_rejects_asymmetric_shape() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="involution"):
        derive_flip_pairs(rng.normal(size=(6, 2)), [(range(0, 3), range(3, 6)), (range(0, 3), range(0, 3))])


# ----- Helen ------------------------------------------------------------------------------------

def _helen_file(path: Path, name: str, points: np.ndarray, sep: str = " , ") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{x:.2f}{sep}{y:.2f}" for x, y in points)
    path.write_text(f"{name}\n{body}\n", encoding="utf-8")
    return path


def test_read_helen_file(tmp_path: Path) -> None:
    pts = synthetic_helen()
    img = _image(tmp_path / "images" / "100032540_1.jpg")
    f = _helen_file(tmp_path / "annotation" / "1.txt", "100032540_1", pts)
    face = read_helen(f, tmp_path / "images")
    assert face.image_path == img
    assert face.scheme is HELEN_194
    assert face.landmarks.shape == (194, 2) and face.landmarks.dtype == np.float32
    np.testing.assert_allclose(face.landmarks, pts, atol=0.006)
    assert face.visible is None and face.source == str(f)


def test_read_helen_folder_natural_order_and_names_file(tmp_path: Path) -> None:
    pts = synthetic_helen()
    for k, name in ((1, "a_1"), (2, "b_1"), (10, "c_1")):
        _helen_file(tmp_path / "ann" / f"{k}.txt", name, pts + k, sep=" ")
        _image(tmp_path / "img" / f"{name}.jpg")
    faces = read_helen_folder(tmp_path / "ann", tmp_path / "img")
    assert [f.image_path.stem for f in faces] == ["a_1", "b_1", "c_1"]
    assert faces[2].landmarks[0, 0] == pytest.approx(pts[0, 0] + 10, abs=0.01)
    names = tmp_path / "testnames.txt"
    names.write_text("c_1\na_1\n", encoding="utf-8")
    assert [f.image_path.stem for f in read_helen_folder(tmp_path / "ann", tmp_path / "img", names)] == [
        "c_1", "a_1"]
    names.write_text("c_1\n\nzzz\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{names}:3: no annotation file for image 'zzz'"):
        read_helen_folder(tmp_path / "ann", tmp_path / "img", names)


@pytest.mark.parametrize("case", ["short", "long", "text", "truncated", "noname", "twonames"])
def test_read_helen_broken(tmp_path: Path, case: str) -> None:
    _image(tmp_path / "img" / "n_1.jpg")
    lines = ["n_1"] + [f"{x:.1f} , {y:.1f}" for x, y in synthetic_helen()]
    expect = {"short": (None, "expected 194 points, found 193"),
              "long": (196, "more than 194 points"),
              "text": (7, "non-numeric point 'abc , 3'"),
              "truncated": (195, "expected 'x , y', found '12.5 ,'"),
              "noname": (1, "first line must be the image name"),
              "twonames": (1, "first line must be the image name")}[case]
    if case == "short":
        lines = lines[:-1]
    elif case == "long":
        lines.append("1 , 2")
    elif case == "text":
        lines[6] = "abc , 3"
    elif case == "truncated":
        lines[-1] = "12.5 ,"
    elif case == "noname":
        lines[0] = ""
    else:
        lines[0] = "12.0 , 3.0"
    f = tmp_path / "1.txt"
    f.write_text("\n".join(lines), encoding="utf-8")
    line, message = expect
    where = f"{f}:{line}" if line else str(f)
    with pytest.raises(AnnotationError) as err:
        read_helen(f, tmp_path / "img")
    assert str(err.value).startswith(f"{where}: ")
    assert message in str(err.value)


def test_read_helen_missing_image(tmp_path: Path) -> None:
    f = _helen_file(tmp_path / "1.txt", "nowhere_1", synthetic_helen())
    with pytest.raises(AnnotationError, match=rf"{f}:1: image 'nowhere_1' not found"):
        read_helen(f, tmp_path)
    with pytest.raises(AnnotationError, match=rf"{f}:1: image 'nowhere_1' not found"):
        read_helen_folder(tmp_path, tmp_path)


# ----- COFW -------------------------------------------------------------------------------------

def _cofw_arrays(n: int = 3) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = []
    for i in range(n):
        h, w = 20 + i, 31 + 2 * i  # not square, so a missing transpose shows
        shape = (h, w, 3) if i % 2 == 0 else (h, w)
        images.append(rng.integers(0, 256, size=shape, dtype=np.uint8))
    phis = np.zeros((n, 87))
    phis[:, :29] = rng.uniform(0, 30, size=(n, 29))
    phis[:, 29:58] = rng.uniform(0, 20, size=(n, 29))
    phis[:, 58:] = rng.integers(0, 2, size=(n, 29))
    bboxes = rng.uniform(1, 10, size=(n, 4))
    return images, phis, bboxes


def _savemat(path: Path, images, phis, bboxes, names=("IsTr", "phisTr", "bboxesTr")) -> Path:
    from scipy.io import savemat

    cell = np.empty((len(images), 1), dtype=object)
    for i, im in enumerate(images):
        cell[i, 0] = im
    savemat(str(path), {names[0]: cell, names[1]: phis, names[2]: bboxes})
    return path


def _save_v73(path: Path, images, phis, bboxes, names=("IsT", "phisT", "bboxesT")) -> Path:
    """Mimic MATLAB v7.3: column-major arrays (transposed), cells as references into '#refs#'."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        cell = f.create_dataset(names[0], shape=(1, len(images)), dtype=h5py.ref_dtype)
        for i, im in enumerate(images):
            d = refs.create_dataset(f"im{i}", data=np.asarray(im).transpose())
            d.attrs["MATLAB_class"] = np.bytes_("uint8")
            cell[0, i] = d.ref
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
        f.create_dataset(names[1], data=phis.T).attrs["MATLAB_class"] = np.bytes_("double")
        f.create_dataset(names[2], data=bboxes.T).attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")
    return path


@pytest.mark.parametrize("writer", ["classic", "v73"])
def test_read_cofw(tmp_path: Path, writer: str) -> None:
    images, phis, bboxes = _cofw_arrays()
    if writer == "classic":
        mat = _savemat(tmp_path / "COFW_train.mat", images, phis, bboxes)
    else:
        mat = _save_v73(tmp_path / "COFW_test.mat", images, phis, bboxes)
    arrays = load_cofw_arrays(mat)
    assert [im.shape for im in arrays.images] == [im.shape for im in images]
    np.testing.assert_array_equal(arrays.phis, phis)
    np.testing.assert_array_equal(arrays.bboxes, bboxes)
    faces = read_cofw(mat, tmp_path / "cache")
    assert len(faces) == 3
    for i, (face, im) in enumerate(zip(faces, images)):
        assert face.scheme is COFW_29
        assert face.image_path == tmp_path / "cache" / f"{mat.stem}_{i + 1:04d}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(face.image_path)), im)
        np.testing.assert_allclose(face.landmarks[:, 0], phis[i, :29], rtol=1e-6)
        np.testing.assert_allclose(face.landmarks[:, 1], phis[i, 29:58], rtol=1e-6)
        np.testing.assert_array_equal(face.visible, phis[i, 58:] == 0)
        assert face.source == f"{mat}[{i + 1}]"


def test_read_cofw_cache_is_not_rewritten(tmp_path: Path) -> None:
    images, phis, bboxes = _cofw_arrays()
    mat = _savemat(tmp_path / "c.mat", images, phis, bboxes)
    faces = read_cofw(mat, tmp_path / "cache")
    _image(faces[0].image_path, 3, 3)  # stands for an earlier extraction
    read_cofw(mat, tmp_path / "cache")
    assert Image.open(faces[0].image_path).size == (3, 3)


def test_read_cofw_broken(tmp_path: Path) -> None:
    images, phis, bboxes = _cofw_arrays()
    bad = _savemat(tmp_path / "short.mat", images, phis[:, :86], bboxes)
    with pytest.raises(AnnotationError, match=rf"^{bad}: phis must be N x 87"):
        read_cofw(bad, tmp_path / "cache")
    bad = _save_v73(tmp_path / "count.h5", images[:2], phis, bboxes)
    with pytest.raises(AnnotationError, match=rf"^{bad}: 2 images but 3 rows of phis"):
        read_cofw(bad, tmp_path / "cache")
    flags = phis.copy()
    flags[1, 60] = 2
    bad = _savemat(tmp_path / "flags.mat", images, flags, bboxes)
    with pytest.raises(AnnotationError, match=rf"^{bad}: face 2: occlusion flags must be 0 or 1"):
        read_cofw(bad, tmp_path / "cache")
    bad = _savemat(tmp_path / "names.mat", images, phis, bboxes, names=("images", "pts", "boxes"))
    with pytest.raises(AnnotationError, match=rf"^{bad}: no COFW variables"):
        read_cofw(bad, tmp_path / "cache")
    bad = tmp_path / "text.mat"
    bad.write_text("not a mat file\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{bad}: cannot read"):
        read_cofw(bad, tmp_path / "cache")
    with pytest.raises(AnnotationError, match="no such file"):
        read_cofw(tmp_path / "absent.mat", tmp_path / "cache")


# ----- CelebA / MAFL ----------------------------------------------------------------------------

LM_HEADER = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
             "rightmouth_x rightmouth_y")
LM_ROWS = ["000001.jpg 69  109  106  113   77  142   73  152  108  154",
           "000002.jpg 69  110  107  112   81  135   70  151  108  153",
           "000003.jpg 76  112  104  106  108  128   74  156   98  158"]


def _celeba(tmp_path: Path, rows=LM_ROWS, count: int | None = None, header: str = LM_HEADER) -> Path:
    for r in LM_ROWS:
        _image(tmp_path / "img_align_celeba" / r.split()[0])
    f = tmp_path / "list_landmarks_align_celeba.txt"
    f.write_text(f"{len(rows) if count is None else count}\n{header}\n" + "\n".join(rows) + "\n",
                 encoding="utf-8")
    return f


def _attrs(tmp_path: Path, rows: list[str] | None = None) -> Path:
    if rows is None:
        rows = []
        for k, r in enumerate(LM_ROWS):
            values = ["1" if (j + k) % 3 == 0 else "-1" for j in range(40)]
            rows.append(r.split()[0] + "  " + " ".join(f"{v:>2}" for v in values))
    f = tmp_path / "list_attr_celeba.txt"
    f.write_text(f"{len(rows)}\n" + " ".join(CELEBA_40) + " \n" + "\n".join(rows) + "\n", encoding="utf-8")
    return f


def test_celeba_task_table_matches_celeba_names() -> None:
    assert len(CELEBA_40) == 40
    assert len(CELEBA_ATTRIBUTE_TASKS) == 22
    assert {c for c, _, _ in CELEBA_ATTRIBUTE_TASKS} <= set(CELEBA_40)
    assert len(set(CELEBA_TASK_NAMES)) == 22
    assert {"male", "smiling", "glasses"} <= set(CELEBA_TASK_NAMES)  # MTFL's names


def test_read_celeba_with_attributes_and_mafl_subset(tmp_path: Path) -> None:
    lm = _celeba(tmp_path)
    attrs = _attrs(tmp_path)
    faces = read_celeba(lm, tmp_path / "img_align_celeba", attrs)
    assert len(faces) == 3 and all(f.scheme.name == "mtfl-5" for f in faces)
    np.testing.assert_array_equal(faces[0].landmarks, [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]])
    assert faces[0].landmarks[0, 0] < faces[0].landmarks[1, 0]  # "lefteye" is the image-left eye
    assert faces[1].source == f"{lm}:4"
    assert set(faces[0].attributes) == set(CELEBA_TASK_NAMES)
    for k, face in enumerate(faces):
        for celeba, task, _ in CELEBA_ATTRIBUTE_TASKS:
            assert face.attributes[task] == int((CELEBA_40.index(celeba) + k) % 3 == 0)
    split = tmp_path / "testing.txt"
    split.write_text("000003.jpg\n000001.jpg\n", encoding="utf-8")
    sub = read_celeba(lm, tmp_path / "img_align_celeba", attrs, split, tasks=["smiling", "male"])
    assert [f.image_path.name for f in sub] == ["000003.jpg", "000001.jpg"]
    assert list(sub[0].attributes) == ["smiling", "male"]
    assert read_celeba(lm, tmp_path / "img_align_celeba")[2].attributes == {}
    with pytest.raises(ValueError, match="unknown CelebA task"):
        read_celeba(lm, tmp_path / "img_align_celeba", attrs, tasks=["lipstick_colour"])


def test_read_celeba_finds_columns_by_name(tmp_path: Path) -> None:
    names = LM_HEADER.split()
    header = " ".join(names[2:4] + names[:2] + names[4:])  # right eye first
    rows = ["000001.jpg 106 113 69 109 77 142 73 152 108 154"]
    lm = _celeba(tmp_path, rows, header=header)
    face = read_celeba(lm, tmp_path / "img_align_celeba")[0]
    np.testing.assert_array_equal(face.landmarks[:2], [[69, 109], [106, 113]])


@pytest.mark.parametrize("case", ["truncated", "text", "fields", "header", "count", "image", "twice"])
def test_read_celeba_broken(tmp_path: Path, case: str) -> None:
    rows, count, header = list(LM_ROWS), None, LM_HEADER
    if case == "truncated":
        rows, count = rows[:2], 3
        expect = (None, "first line says 3 faces, found 2")
    elif case == "text":
        rows[1] = rows[1].replace("107", "1O7")
        expect = (4, "non-numeric value")
    elif case == "fields":
        rows[2] = rows[2].rsplit(" ", 1)[0]
        expect = (5, "expected an image name and 10 values, found 10 fields")
    elif case == "header":
        header = LM_HEADER.replace("nose_y", "nose_z")
        expect = (2, "header lacks column(s) ['nose_y']")
    elif case == "count":
        count = "many"
        expect = (1, "first line must be the face count")
    elif case == "image":
        rows[2] = rows[2].replace("000003.jpg", "999999.jpg")
        expect = (5, "image '999999.jpg' not found")
    else:
        rows[2] = rows[0]
        expect = (5, "image '000001.jpg' listed twice")
    lm = _celeba(tmp_path, rows, count=count, header=header)  # type: ignore[arg-type]
    line, message = expect
    with pytest.raises(AnnotationError) as err:
        read_celeba(lm, tmp_path / "img_align_celeba")
    assert str(err.value).startswith(f"{lm}:{line}: " if line else f"{lm}: ")
    assert message in str(err.value)


def test_read_celeba_broken_attributes_and_subset(tmp_path: Path) -> None:
    lm = _celeba(tmp_path)
    good = _attrs(tmp_path).read_text(encoding="utf-8").splitlines()
    attrs = tmp_path / "list_attr_celeba.txt"
    attrs.write_text("\n".join(good[:3] + [good[3].replace("-1", "0", 1)] + good[4:]) + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{attrs}:4: attribute \w+ must be 1 or -1, found '0'"):
        read_celeba(lm, tmp_path / "img_align_celeba", attrs)
    attrs.write_text("\n".join([good[0], good[1].replace("Smiling", "Smile"), *good[2:]]) + "\n",
                     encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{attrs}:2: header lacks attribute\(s\) \['Smiling'\]"):
        read_celeba(lm, tmp_path / "img_align_celeba", attrs)
    attrs.write_text("\n".join(["2", good[1], good[2], good[3]]) + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{attrs}: no attributes for image '000003.jpg'"):
        read_celeba(lm, tmp_path / "img_align_celeba", attrs)
    split = tmp_path / "training.txt"
    split.write_text("000001.jpg\n\n000404.jpg\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{split}:3: image '000404.jpg' is not in"):
        read_celeba(lm, tmp_path / "img_align_celeba", subset_file=split)


# ----- AFLW -------------------------------------------------------------------------------------

def _aflw_row(image: str, pts: np.ndarray, sep: str = " ") -> str:
    return sep.join([image] + [f"{v:g}" for v in pts.reshape(-1)])


def test_read_aflw_rows_with_missing_points(tmp_path: Path) -> None:
    _image(tmp_path / "flickr" / "0" / "a.jpg")
    _image(tmp_path / "flickr" / "0" / "b.jpg")
    pts = _named_symmetric(AFLW_21)
    gappy = pts.copy()
    gappy[12] = np.nan  # an ear, as nan
    gappy[16] = -1  # the other ear, as -1 -1
    text = "# image x1 y1 ... x21 y21\n" + _aflw_row("flickr/0/a.jpg", pts) + "\n\n" + _aflw_row(
        "flickr\\0\\b.jpg", gappy, sep=",") + "\n"
    f = tmp_path / "aflw.txt"
    f.write_text(text, encoding="utf-8")
    faces = read_aflw(f)
    assert len(faces) == 2 and faces[0].scheme is AFLW_21
    assert faces[1].image_path == tmp_path / "flickr" / "0" / "b.jpg"
    assert faces[0].visible.all()
    assert faces[1].visible.tolist() == [i not in (12, 16) for i in range(21)]
    np.testing.assert_allclose(faces[1].landmarks[faces[1].visible], pts[faces[1].visible], rtol=1e-5)
    assert np.isfinite(faces[1].landmarks).all()
    np.testing.assert_allclose(faces[1].landmarks[12], pts[faces[1].visible].mean(axis=0), rtol=1e-5)
    assert faces[1].source == f"{f}:4"


@pytest.mark.parametrize("case", ["fields", "text", "image", "empty_face", "inf"])
def test_read_aflw_broken(tmp_path: Path, case: str) -> None:
    _image(tmp_path / "a.jpg")
    pts = _named_symmetric(AFLW_21)
    row = _aflw_row("a.jpg", pts)
    if case == "fields":
        row, expect = row.rsplit(" ", 1)[0], "expected 43 fields (image path, 21 x y pairs), found 42"
    elif case == "text":
        row, expect = row.replace(" ", " x", 1), "non-numeric value"
    elif case == "image":
        row, expect = row.replace("a.jpg", "b.jpg"), f"image {tmp_path / 'b.jpg'} not found"
    elif case == "empty_face":
        row, expect = _aflw_row("a.jpg", np.full((21, 2), -1.0)), "face has no points"
    else:
        fields = row.split()
        fields[1] = "inf"
        row, expect = " ".join(fields), "infinite coordinate"
    f = tmp_path / "aflw.txt"
    f.write_text(_aflw_row("a.jpg", pts) + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError) as err:
        read_aflw(f)
    assert str(err.value).startswith(f"{f}:2: ")
    assert expect in str(err.value)


def test_read_aflw_point_rows(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "x.jpg")
    _image(tmp_path / "img" / "y.jpg")
    faces_file = tmp_path / "faces.txt"
    faces_file.write_text("39341 img/y.jpg\n39340,img/x.jpg\n", encoding="utf-8")
    pts = _named_symmetric(AFLW_21)
    lines = [f"39340 {k + 1} {x} {y}" for k, (x, y) in enumerate(pts)]
    lines += [f"39341,{k + 1},{x},{y}" for k, (x, y) in enumerate(pts) if k not in (0, 20)]
    coords = tmp_path / "coords.txt"
    coords.write_text("\n".join(lines) + "\n", encoding="utf-8")
    faces = read_aflw_points(coords, faces_file)
    assert [f.image_path.name for f in faces] == ["y.jpg", "x.jpg"]
    assert faces[0].visible.tolist() == [k not in (0, 20) for k in range(21)]
    assert faces[1].visible.all()
    np.testing.assert_allclose(faces[1].landmarks, pts, rtol=1e-6)
    assert faces[0].source == f"{coords}:22"
    for bad_line, message in (("39340 22 1 2", "feature_id must be 1..21, found 22"),
                              ("39340 3 1 2", "face 39340 feature 3 given twice"),
                              ("77 3 1 2", f"face 77 is not in {faces_file}"),
                              ("39340 3 one 2", "non-numeric value"),
                              ("39340 3 1", "expected 'face_id feature_id x y', found 3 fields")):
        coords.write_text("\n".join(lines[:5] + [bad_line]) + "\n", encoding="utf-8")
        with pytest.raises(AnnotationError) as err:
            read_aflw_points(coords, faces_file)
        assert str(err.value).startswith(f"{coords}:6: {message}")
    coords.write_text("\n".join(lines[:21]) + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{faces_file}:1: face 39341 has no points"):
        read_aflw_points(coords, faces_file)
    faces_file.write_text("39340 img/x.jpg\n39341 img/nothere.jpg\n", encoding="utf-8")
    coords.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"^{faces_file}:2: image .*nothere.jpg not found"):
        read_aflw_points(coords, faces_file)


# ----- 300-W subsets ----------------------------------------------------------------------------

def _pts(path: Path, points: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n", encoding="utf-8")
    _image(path.with_suffix(".jpg"))


def test_read_300w_subsets(tmp_path: Path) -> None:
    counts = {"lfpw/trainset": 1, "lfpw/testset": 2, "helen/trainset": 3, "helen/testset": 4, "afw": 5,
              "ibug": 6}
    pts = np.stack([np.linspace(0, 67, 68), np.linspace(10, 77, 68)], axis=1)
    for folder, n in counts.items():
        for k in range(n):
            _pts(tmp_path / folder / f"img_{k}.pts", pts)
    expected = {"common": 6, "challenging": 6, "full": 12, "train": 9}
    for subset, folders in W300_SUBSETS.items():
        faces = read_300w(tmp_path, subset)
        assert len(faces) == expected[subset] == sum(counts[f] for f in folders)
        assert all(f.scheme is IBUG_68 for f in faces)
    full = read_300w(tmp_path, "full")
    assert [f.image_path.parent.name for f in full][:2] == ["testset", "testset"]
    assert full[-1].image_path.parent.name == "ibug"
    with pytest.raises(ValueError, match="unknown 300-W subset"):
        read_300w(tmp_path, "indoor")


def test_read_300w_missing_folders(tmp_path: Path) -> None:
    pts = np.zeros((68, 2))
    _pts(tmp_path / "afw" / "a.pts", pts)
    with pytest.raises(AnnotationError, match=r"missing: lfpw/trainset, helen/trainset$"):
        read_300w(tmp_path, "train")
    assert len(read_300w(tmp_path, "train", allow_missing=True)) == 1
    with pytest.raises(AnnotationError, match=r"missing: ibug$"):
        read_300w(tmp_path, "challenging", allow_missing=True)
    with pytest.raises(AnnotationError, match="no such folder"):
        read_300w(tmp_path / "nothing", "full")


needs_300w = pytest.mark.skipif(not (SHARED_300W / "afw").is_dir(), reason="shared 300-W data not present")


@needs_300w
def test_real_300w_folder() -> None:
    faces = read_pts_folder(SHARED_300W)
    assert len(faces) == 1207
    assert sum(f.image_path.parent.name == "afw" for f in faces) == 337
    assert sum(f.image_path.parent.name == "trainset" for f in faces) == 870
    # the available part of the training subset: afw + helen/trainset, lfpw missing
    with pytest.raises(AnnotationError, match=r"missing: lfpw/trainset$"):
        read_300w(SHARED_300W, "train")
    train = read_300w(SHARED_300W, "train", allow_missing=True)
    assert len(train) == 1207
    assert train[0].image_path.parent.name == "trainset" and train[-1].image_path.parent.name == "afw"
    # .pts is 1-based: the first point of this AFW file reads "64.000 86.720"
    first = next(f for f in faces if f.image_path.stem == "1051618982_1")
    np.testing.assert_allclose(first.landmarks[0], [63.0, 85.72], atol=1e-4)
    # the left/right check tool agrees with the known iBUG 68 convention on real faces
    assert left_right_agreement(faces) > 0.95
