"""Splat import/export in real Blender (the ``bpy`` module).

PLY files are written here with numpy (independently of the native module)
or with the native ``write_ply``; every imported attribute is compared
bit-for-bit with the file's values.
"""

import pathlib
import sys
import types

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

ROOT = pathlib.Path(__file__).resolve().parents[2]
HAS_INIT = (ROOT / "addon" / "__init__.py").exists()

C0 = 0.28209479177387814
STANDARD = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(45)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)
REQUIRED = ["f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]
PLY_TYPES = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "i2": "short",
             "u2": "ushort", "i4": "int", "u4": "uint"}
PLY_DTYPES = {v: k for k, v in PLY_TYPES.items()}
PLY_DTYPES.update(float32="f4", float64="f8", uint8="u1", int8="i1", int16="i2", uint16="u2",
                  int32="i4", uint32="u4")


# ------------------------------------------------------------ numpy PLY files


def write_ply_numpy(path, props):
    """Binary little-endian PLY with the vertex properties ``props`` ({name: array}), in dict order."""
    count = len(next(iter(props.values())))
    dtype = np.dtype([(name, "<" + a.dtype.str[1:]) for name, a in props.items()])
    body = np.empty(count, dtype)
    for name, a in props.items():
        body[name] = a
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by test_splat_io\n"
        f"element vertex {count}\n"
        + "".join(f"property {PLY_TYPES[a.dtype.str[1:]]} {name}\n" for name, a in props.items())
        + "end_header\n"
    )
    pathlib.Path(path).write_bytes(header.encode("ascii") + body.tobytes())
    return path


def read_ply_numpy(path):
    """{name: array} of a binary little-endian PLY's vertex element, in file order."""
    raw = pathlib.Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0", lines[:2]
    fields, count, in_vertex = [], None, False
    for line in lines:
        words = line.split()
        if words[:1] == ["element"]:
            in_vertex = words[1] == "vertex"
            if in_vertex:
                count = int(words[2])
            else:
                assert not fields, "vertex must be the only element"
        elif words[:1] == ["property"] and in_vertex:
            fields.append((words[2], "<" + PLY_DTYPES[words[1]]))
    body = np.frombuffer(raw, np.dtype(fields), count, offset=end)
    assert len(raw) == end + body.nbytes, "trailing bytes after the vertex data"
    return {name: body[name].copy() for name, _ in fields}


def random_splats(count, sh_degree=3, seed=0):
    """{name: float32 array} of plausible random splats, standard property order."""
    rng = np.random.default_rng(seed)
    n_rest = {0: 0, 1: 9, 2: 24, 3: 45}[sh_degree]
    props = {}
    for name in ("x", "y", "z"):
        props[name] = rng.normal(0, 2, count).astype(np.float32)
    for name in ("f_dc_0", "f_dc_1", "f_dc_2"):
        props[name] = rng.normal(0, 1, count).astype(np.float32)
    for i in range(n_rest):
        props[f"f_rest_{i}"] = rng.normal(0, 0.1, count).astype(np.float32)
    props["opacity"] = rng.normal(0, 3, count).astype(np.float32)
    for i in range(3):
        props[f"scale_{i}"] = rng.uniform(-6, -2, count).astype(np.float32)
    for i in range(4):
        props[f"rot_{i}"] = rng.normal(0, 1, count).astype(np.float32)
    if count >= 3:  # values that a careless conversion would not keep bit-for-bit
        props["f_rest_0" if n_rest else "rot_1"][:3] = np.array([-0.0, 1e-45, 3.4028235e38], np.float32)
    return props


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def native_write(path, props):
    native = pytest.importorskip("splatdiff_native")
    count = len(props["x"])
    positions = np.stack([props["x"], props["y"], props["z"]], 1).astype(np.float32).ravel()
    columns = [(n, np.ascontiguousarray(a, np.float32)) for n, a in props.items() if n not in ("x", "y", "z")]
    native.write_ply(str(path), count, positions, columns)
    return path


# ------------------------------------------------------------- the add-on


def _package():
    """The add-on package ``splatdiff`` (a bare package over ``addon/`` until ``__init__.py`` exists)."""
    if HAS_INIT:
        sys.path.insert(0, str(pathlib.Path(__file__).parent))
        from conftest import load_addon

        return load_addon()
    if "splatdiff" not in sys.modules:
        package = types.ModuleType("splatdiff")
        package.__path__ = [str(ROOT / "addon")]
        sys.modules["splatdiff"] = package
    return sys.modules["splatdiff"]


@pytest.fixture(scope="module")
def splat_io():
    _package()
    import splatdiff.splat_io

    return splatdiff.splat_io


@pytest.fixture(scope="module")
def operators(request, splat_io):
    """The import/export operators, registered (by the whole add-on once it has an ``__init__``)."""
    if HAS_INIT:
        request.getfixturevalue("addon")
        yield
        return
    import splatdiff.io_operators as io_operators

    io_operators.register()
    yield
    io_operators.unregister()


@pytest.fixture
def native():
    return pytest.importorskip("splatdiff_native")


def _datablocks():
    return {
        "objects": set(bpy.data.objects),
        "meshes": set(bpy.data.meshes),
        "materials": set(bpy.data.materials),
        "node_groups": set(bpy.data.node_groups),
    }


@pytest.fixture
def clean_scene():
    """Removes the objects and meshes a test created (node group and material are shared)."""
    before = _datablocks()
    yield before
    for obj in set(bpy.data.objects) - before["objects"]:
        bpy.data.objects.remove(obj)
    for mesh in set(bpy.data.meshes) - before["meshes"]:
        bpy.data.meshes.remove(mesh)


def _attribute(mesh, name, prop="value", width=1):
    attribute = mesh.attributes[name]
    out = np.empty(len(mesh.vertices) * width, np.float32)
    attribute.data.foreach_get(prop, out)
    return out


def _positions(mesh):
    out = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def _check_imported(obj, props, splat_io):
    """The object holds exactly the file's splats: centres and every property, bit-for-bit."""
    mesh = obj.data
    count = len(props["x"])
    assert obj.type == 'MESH'
    assert len(mesh.vertices) == count
    assert len(mesh.edges) == 0 and len(mesh.polygons) == 0
    expected_positions = np.stack([props["x"], props["y"], props["z"]], 1).astype(np.float32)
    np.testing.assert_array_equal(bits(_positions(mesh)), bits(expected_positions))
    for name, values in props.items():
        if name in ("x", "y", "z"):
            continue
        attribute = mesh.attributes.get(name)
        assert attribute is not None, f"no attribute {name!r}"
        assert (attribute.domain, attribute.data_type) == ('POINT', 'FLOAT'), name
        np.testing.assert_array_equal(bits(_attribute(mesh, name)), bits(values.astype(np.float32)), err_msg=name)
    color = mesh.attributes["display_color"]
    assert (color.domain, color.data_type) == ('POINT', 'FLOAT_COLOR')
    radius = mesh.attributes["display_radius"]
    assert (radius.domain, radius.data_type) == ('POINT', 'FLOAT')
    # The display: GN modifier -> node group -> material reading display_color.
    modifiers = [m for m in obj.modifiers if m.type == 'NODES']
    assert len(modifiers) == 1
    group = modifiers[0].node_group
    assert group is not None and group.name == splat_io.NODE_GROUP_NAME
    kinds = {node.bl_idname for node in group.nodes}
    assert {'GeometryNodeMeshToPoints', 'GeometryNodeSetMaterial', 'GeometryNodeInputNamedAttribute'} <= kinds
    set_material = next(n for n in group.nodes if n.bl_idname == 'GeometryNodeSetMaterial')
    material = set_material.inputs["Material"].default_value
    assert material is not None and material.name == splat_io.MATERIAL_NAME
    attribute_nodes = [n for n in material.node_tree.nodes if n.bl_idname == 'ShaderNodeAttribute']
    assert [n.attribute_name for n in attribute_nodes] == ["display_color"]
    # The evaluated object is a point cloud of the splats, with the material.
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    if hasattr(evaluated, "evaluated_geometry"):  # 4.3+
        geometry = evaluated.evaluated_geometry()  # keep it alive while its point cloud is read
        pointcloud = geometry.pointcloud
        assert pointcloud is not None and len(pointcloud.points) == count
        assert [m.name for m in pointcloud.materials] == [splat_io.MATERIAL_NAME]


# ------------------------------------------------------------------- tests


def test_numpy_ply_helpers_round_trip(tmp_path):
    props = random_splats(10, 3, seed=3)
    props["label"] = np.arange(10, dtype=np.uint8)
    path = write_ply_numpy(tmp_path / "a.ply", props)
    back = read_ply_numpy(path)
    assert list(back) == list(props)
    for name in props:
        assert back[name].dtype == props[name].dtype
        np.testing.assert_array_equal(back[name], props[name])


def test_import_native_written_sh3(tmp_path, splat_io, native, clean_scene):
    props = random_splats(1000, 3, seed=1)
    path = native_write(tmp_path / "garden.ply", props)
    on_disk = read_ply_numpy(path)  # the file's own values, read independently
    active_collection = bpy.context.collection
    obj = splat_io.import_splats(bpy.context, path)
    on_disk_props = {n: a for n, a in on_disk.items() if n not in ("nx", "ny", "nz")}
    _check_imported(obj, on_disk_props, splat_io)
    assert obj.name == "garden"
    assert obj["splatdiff_sh_degree"] == 3
    assert obj["splatdiff_source"] == str(path)
    assert bpy.context.view_layer.objects.active is obj
    assert obj.select_get()
    assert obj.users_collection == (active_collection,)
    # Display data equal to what the native reader computes.
    data = native.read_ply(str(path))
    np.testing.assert_array_equal(
        bits(_attribute(obj.data, "display_color", "color", 4)), bits(np.frombuffer(data["display_color"], np.float32))
    )
    np.testing.assert_array_equal(
        bits(_attribute(obj.data, "display_radius")), bits(np.frombuffer(data["display_radius"], np.float32))
    )
    # The display data is plausible: colour from the DC term, alpha = sigmoid(opacity).
    color = _attribute(obj.data, "display_color", "color", 4).reshape(-1, 4)
    np.testing.assert_allclose(color[:, 3], 1 / (1 + np.exp(-on_disk["opacity"].astype(np.float64))), atol=1e-5)
    assert np.all((color[:, :3] >= 0) & (color[:, :3] <= 1))


def test_import_shuffled_properties_and_extras(tmp_path, splat_io, native, clean_scene):
    """A PLY written with numpy, properties in a random order, an extra float and an extra uchar."""
    props = random_splats(257, 3, seed=2)
    props["confidence"] = np.random.default_rng(5).random(257).astype(np.float32)
    props["label"] = (np.arange(257) % 200).astype(np.uint8)
    names = list(props)
    np.random.default_rng(7).shuffle(names)
    shuffled = {n: props[n] for n in names}
    path = write_ply_numpy(tmp_path / "shuffled.ply", shuffled)

    collection = bpy.data.collections.new("splat target")
    bpy.context.scene.collection.children.link(collection)
    try:
        obj = splat_io.import_splats(bpy.context, path, name="Shuffled", collection=collection)
        _check_imported(obj, props, splat_io)
        assert obj.name == "Shuffled"
        assert obj.users_collection == (collection,)
        # Columns follow the file's order, extras included.
        mesh_order = [a.name for a in obj.data.attributes if a.name in props]
        assert mesh_order == [n for n in names if n not in ("x", "y", "z")]
    finally:
        bpy.data.collections.remove(collection)


def test_node_group_and_material_are_reused(tmp_path, splat_io, native, clean_scene):
    path = write_ply_numpy(tmp_path / "small.ply", random_splats(20, 0))
    first = splat_io.import_splats(bpy.context, path)
    second = splat_io.import_splats(bpy.context, path)
    assert first.modifiers[0].node_group == second.modifiers[0].node_group
    assert len([g for g in bpy.data.node_groups if g.name.startswith(splat_io.NODE_GROUP_NAME)]) == 1
    assert len([m for m in bpy.data.materials if m.name.startswith(splat_io.MATERIAL_NAME)]) == 1
    assert first["splatdiff_sh_degree"] == 0
    assert bpy.context.view_layer.objects.active is second
    assert second.select_get() and not first.select_get()
    group = first.modifiers[0].node_group
    scale = next(i for i in group.interface.items_tree if getattr(i, "name", "") == "Radius Scale")
    assert scale.default_value == 1.0
    assert first.modifiers[0][scale.identifier] == 1.0


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_export_round_trip(tmp_path, splat_io, native, clean_scene, sh_degree):
    props = random_splats(333, sh_degree, seed=4)
    props["confidence"] = np.linspace(0, 1, 333, dtype=np.float32)
    names = list(props)
    np.random.default_rng(11).shuffle(names)
    source = write_ply_numpy(tmp_path / "source.ply", {n: props[n] for n in names})
    obj = splat_io.import_splats(bpy.context, source)

    out = tmp_path / "out.ply"
    assert splat_io.export_splats(obj, out) == 333
    written = read_ply_numpy(out)
    expected = {n: a for n, a in props.items() if n not in ("nx", "ny", "nz")}
    assert set(written) - {"nx", "ny", "nz"} == set(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(bits(written[name]), bits(values), err_msg=name)
    # and the native reader agrees
    data = native.read_ply(str(out))
    assert data["count"] == 333 and data["sh_degree"] == sh_degree

    splat = tmp_path / "out.splat"
    assert splat_io.export_splats(obj, splat) == 333
    assert splat.stat().st_size == 32 * 333


def test_export_rejects_non_splat_mesh(tmp_path, splat_io, clean_scene):
    mesh = bpy.data.meshes.new("plain")
    mesh.vertices.add(4)
    mesh.attributes.new("opacity", 'FLOAT', 'POINT')
    obj = bpy.data.objects.new("plain", mesh)
    with pytest.raises(ValueError) as info:
        splat_io.export_splats(obj, tmp_path / "x.ply")
    message = str(info.value)
    assert "'plain'" in message
    for name in ("f_dc_0", "scale_2", "rot_3"):
        assert name in message
    assert "opacity" not in message.split("attributes", 1)[1]
    assert not (tmp_path / "x.ply").exists()


def _assert_nothing_new(before):
    after = _datablocks()
    for kind in ("objects", "meshes"):
        assert after[kind] == before[kind], f"new {kind}: {after[kind] - before[kind]}"


def test_import_truncated_file_fails_cleanly(tmp_path, splat_io, native, clean_scene):
    path = write_ply_numpy(tmp_path / "truncated.ply", random_splats(100, 3))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(native.SplatdiffError) as info:
        splat_io.import_splats(bpy.context, path)
    assert str(path) in str(info.value)
    _assert_nothing_new(clean_scene)


def test_import_missing_opacity_fails_cleanly(tmp_path, splat_io, native, clean_scene):
    props = random_splats(50, 1)
    del props["opacity"]
    path = write_ply_numpy(tmp_path / "no_opacity.ply", props)
    with pytest.raises(native.SplatdiffError) as info:
        splat_io.import_splats(bpy.context, path)
    assert str(path) in str(info.value)
    assert "opacity" in str(info.value)
    _assert_nothing_new(clean_scene)


def test_import_operator_reports_errors(tmp_path, operators, native, clean_scene):
    path = write_ply_numpy(tmp_path / "bad.ply", random_splats(10, 0))
    path.write_bytes(path.read_bytes()[:-7])
    # bpy.ops turns an operator's ERROR report into RuntimeError("Error: <report>");
    # an exception escaping execute() would show up as a Python traceback instead.
    with pytest.raises(RuntimeError) as info:
        bpy.ops.import_scene.splatdiff_ply(filepath=str(path))
    message = str(info.value)
    assert "Traceback" not in message
    assert str(path) in message
    _assert_nothing_new(clean_scene)


def test_import_and_export_operators(tmp_path, operators, native, clean_scene):
    props = random_splats(64, 2, seed=9)
    path = write_ply_numpy(tmp_path / "op.ply", props)
    assert bpy.ops.import_scene.splatdiff_ply(filepath=str(path), radius_scale=2.5) == {'FINISHED'}
    obj = bpy.context.view_layer.objects.active
    assert obj is not None and len(obj.data.vertices) == 64
    group = obj.modifiers[0].node_group
    scale = next(i for i in group.interface.items_tree if getattr(i, "name", "") == "Radius Scale")
    assert obj.modifiers[0][scale.identifier] == pytest.approx(2.5)

    out = tmp_path / "op_out.splat"
    assert bpy.ops.export_scene.splatdiff_ply(filepath=str(out)) == {'FINISHED'}
    assert out.stat().st_size == 32 * 64
    out_ply = tmp_path / "op_out.ply"
    assert bpy.ops.export_scene.splatdiff_ply(filepath=str(out_ply)) == {'FINISHED'}
    assert read_ply_numpy(out_ply)["f_rest_23"].tobytes() == props["f_rest_23"].tobytes()

    # Exporting a mesh that is not a splat object is reported, not raised.
    plain = bpy.data.objects.new("plain", bpy.data.meshes.new("plain"))
    bpy.context.scene.collection.objects.link(plain)
    bpy.context.view_layer.objects.active = plain
    with pytest.raises(RuntimeError) as info:
        bpy.ops.export_scene.splatdiff_ply(filepath=str(tmp_path / "plain.ply"))
    assert "Traceback" not in str(info.value) and "f_dc_0" in str(info.value)


def test_cycles_render_shows_splat_colour(tmp_path, splat_io, native, clean_scene):
    """32x32, 4 samples: the splats appear in their (emitted) colour over a black world."""
    count = 40
    rng = np.random.default_rng(0)
    props = {
        "x": rng.uniform(-0.6, 0.6, count).astype(np.float32),
        "y": rng.uniform(-0.6, 0.6, count).astype(np.float32),
        "z": np.zeros(count, np.float32),
        # DC giving sRGB (1, 0.5, 0) -> linear (1, 0.214, 0)
        "f_dc_0": np.full(count, 0.5 / C0, np.float32),
        "f_dc_1": np.zeros(count, np.float32),
        "f_dc_2": np.full(count, -0.5 / C0, np.float32),
        "opacity": np.full(count, 12.0, np.float32),
    }
    for i in range(3):
        props[f"scale_{i}"] = np.full(count, np.log(0.1), np.float32)  # display radius 0.2
    for i in range(4):
        props[f"rot_{i}"] = np.array([1.0, 0, 0, 0], np.float32)[i].repeat(count)
    path = write_ply_numpy(tmp_path / "render.ply", props)

    scene = bpy.context.scene
    saved = {
        "engine": scene.render.engine, "x": scene.render.resolution_x, "y": scene.render.resolution_y,
        "pct": scene.render.resolution_percentage, "camera": scene.camera, "world": scene.world,
        "filepath": scene.render.filepath, "view": scene.view_settings.view_transform,
    }
    obj = splat_io.import_splats(bpy.context, path)
    color = _attribute(obj.data, "display_color", "color", 4).reshape(-1, 4)
    expected = color[0, :3]
    np.testing.assert_allclose(expected, [1.0, 0.2140, 0.0], atol=2e-3)

    camera_data = bpy.data.cameras.new("splat cam")
    camera_data.type = 'ORTHO'
    camera_data.ortho_scale = 2.0
    camera = bpy.data.objects.new("splat cam", camera_data)
    camera.location = (0, 0, 5)
    scene.collection.objects.link(camera)
    world = bpy.data.worlds.new("black")
    world.color = (0, 0, 0)
    if world.use_nodes:
        background = world.node_tree.nodes.get("Background")
        if background is not None:
            background.inputs["Color"].default_value = (0, 0, 0, 1)
    image = None
    hidden = [o for o in scene.objects if o not in (obj, camera) and not o.hide_render]
    try:
        for other in hidden:  # the startup file's cube would hide the splats
            other.hide_render = True
        scene.camera = camera
        scene.world = world
        scene.render.engine = 'CYCLES'
        scene.cycles.device = 'CPU'
        scene.cycles.samples = 4
        scene.cycles.use_denoising = False
        if hasattr(scene.cycles, "use_adaptive_sampling"):
            scene.cycles.use_adaptive_sampling = False
        scene.render.resolution_x = scene.render.resolution_y = 32
        scene.render.resolution_percentage = 100
        scene.view_settings.view_transform = 'Standard'
        scene.render.image_settings.file_format = 'OPEN_EXR'
        scene.render.image_settings.color_depth = '32'
        scene.render.filepath = str(tmp_path / "render.exr")
        bpy.ops.render.render(write_still=True)

        image = bpy.data.images.load(str(tmp_path / "render.exr"))
        pixels = np.empty(32 * 32 * 4, np.float32)
        image.pixels.foreach_get(pixels)
        rgb = pixels.reshape(-1, 4)[:, :3]
        lit = rgb.sum(1) > 0.05
        assert lit.sum() >= 20, f"only {lit.sum()} splat pixels"
        assert (~lit).sum() >= 100, "the splats should not cover the whole frame"
        # Every lit pixel has the splats' hue (red >= green >> blue), and fully
        # covered ones have their colour.
        assert np.all(rgb[lit, 0] >= rgb[lit, 1] - 1e-3)
        assert np.all(rgb[lit, 2] <= 0.02 + 0.05 * rgb[lit, 0])
        brightest = rgb[np.argmax(rgb[:, 0])]
        np.testing.assert_allclose(brightest, expected, atol=0.06)
    finally:
        for other in hidden:
            other.hide_render = False
        if image is not None:
            bpy.data.images.remove(image)
        scene.render.engine = saved["engine"]
        scene.render.resolution_x, scene.render.resolution_y = saved["x"], saved["y"]
        scene.render.resolution_percentage = saved["pct"]
        scene.camera = saved["camera"]
        scene.world = saved["world"]
        scene.render.filepath = saved["filepath"]
        scene.view_settings.view_transform = saved["view"]
        bpy.data.objects.remove(camera)
        bpy.data.cameras.remove(camera_data)
        bpy.data.worlds.remove(world)


def test_export_operator_keeps_splat_extension(operators):
    """The file browser's extension check keeps a typed .splat and fixes anything else to .ply."""
    cls = bpy.types.EXPORT_SCENE_OT_splatdiff_ply
    for typed, expected in [("/tmp/a.splat", "/tmp/a.splat"), ("/tmp/a", "/tmp/a.ply"),
                            ("/tmp/a.ply", "/tmp/a.ply"), ("/tmp/a.txt", "/tmp/a.ply")]:
        fake = types.SimpleNamespace(filepath=typed, filename_ext=".ply", check_extension=True)
        cls.check(fake, bpy.context)
        assert fake.filepath == expected, typed


def test_import_operator_reports_missing_native_module(tmp_path, operators, splat_io, monkeypatch, clean_scene):
    def missing():
        raise splat_io.native.NativeMissing("splatdiff's native module (splatdiff_native) is not installed")

    monkeypatch.setattr(splat_io.native, "load", missing)
    path = write_ply_numpy(tmp_path / "fine.ply", random_splats(5, 0))
    with pytest.raises(RuntimeError) as info:
        bpy.ops.import_scene.splatdiff_ply(filepath=str(path))
    assert "Traceback" not in str(info.value) and "not installed" in str(info.value)
    _assert_nothing_new(clean_scene)
