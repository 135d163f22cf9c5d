use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::json;
use splatdiff_scene::transforms::read_transforms_unchecked;
use splatdiff_scene::{read_transforms, write_transforms};

use crate::assert_error;

const IDENTITY: [[f32; 4]; 4] =
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];

/// Writes `json` as `transforms.json` in `dir` and returns its path.
fn write_json(dir: &Path, json: &serde_json::Value) -> PathBuf {
    let path = dir.join("transforms.json");
    std::fs::write(&path, serde_json::to_string_pretty(json).unwrap()).unwrap();
    path
}

fn tiny_png(path: &Path, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbaImage::new(width, height).save(path).unwrap();
}

#[test]
fn nerf_synthetic_style() {
    let dir = tempfile::tempdir().unwrap();
    tiny_png(&dir.path().join("train/r_0.png"), 8, 6);
    tiny_png(&dir.path().join("train/r_1.png"), 8, 6);
    let mut moved = IDENTITY;
    moved[0][3] = 2.5; // x translation, in row-major order
    let path = write_json(
        dir.path(),
        &json!({
            "camera_angle_x": 0.6911112070083618,
            "frames": [
                {"file_path": "./train/r_0", "rotation": 0.01, "transform_matrix": moved},
                {"file_path": "./train/r_1", "transform_matrix": IDENTITY},
                {"file_path": "./train/r_2", "transform_matrix": IDENTITY},
            ]
        }),
    );
    let dataset = read_transforms(&path).unwrap();
    assert_eq!(dataset.root, dir.path());
    assert_eq!(dataset.frames.len(), 2);
    assert_eq!(dataset.warnings.len(), 1);
    assert!(dataset.warnings[0].contains("r_2.png") && dataset.warnings[0].contains("missing image"));
    let frame = &dataset.frames[0];
    assert_eq!((frame.name.as_str(), frame.file_path.as_str()), ("r_0", "./train/r_0"));
    assert_eq!(frame.image_path, dir.path().join("train/r_0.png"));
    assert_eq!(frame.camera.position(), glam::Vec3::new(2.5, 0.0, 0.0));
    let k = frame.camera.intrinsics;
    assert_eq!((k.width, k.height, k.cx, k.cy), (8, 6, 4.0, 3.0));
    assert!((k.fx - 4.0 / (0.5f32 * 0.6911112).tan()).abs() < 1e-4 && k.fx == k.fy);
    assert!(dataset.extra.is_empty());

    assert_eq!(read_transforms_unchecked(&path).unwrap().frames.len(), 3, "unchecked keeps every frame");
    std::fs::remove_dir_all(dir.path().join("train")).unwrap();
    assert_error(read_transforms(&path), &path, &["none of the 3 frames", "r_0.png: missing image"]);
    assert_error(read_transforms_unchecked(&path), &path, &["no image size"]);
}

/// An instant-ngp style dataset whose frame 1 has its own focal length and
/// size, with extra keys and per-frame maps; images are not written.
fn instant_ngp(dir: &Path) -> PathBuf {
    write_json(
        dir,
        &json!({
            "fl_x": 500.0, "fl_y": 510.5, "cx": 320.25, "cy": 239.0, "w": 640, "h": 480.0,
            "aabb_scale": 16, "k1": 0.01,
            "frames": [
                {"file_path": "images/a.jpg", "transform_matrix": IDENTITY,
                 "depth_file_path": "depth/a.exr", "mask_file_path": "masks/a.png"},
                {"file_path": "images/b.jpg", "transform_matrix": IDENTITY,
                 "fl_x": 300.0, "w": 320, "h": 240, "normal_file_path": "normals/b.exr"},
            ]
        }),
    )
}

#[test]
fn instant_ngp_style_with_per_frame_intrinsics() {
    let dir = tempfile::tempdir().unwrap();
    let path = instant_ngp(dir.path());
    let dataset = read_transforms_unchecked(&path).unwrap();
    let [a, b] = &dataset.frames[..] else { panic!("two frames expected") };
    let (ka, kb) = (a.camera.intrinsics, b.camera.intrinsics);
    assert_eq!((ka.fx, ka.fy, ka.cx, ka.cy, ka.width, ka.height), (500.0, 510.5, 320.25, 239.0, 640, 480));
    assert_eq!((kb.fx, kb.fy, kb.width, kb.height), (300.0, 510.5, 320, 240));
    assert_eq!(a.image_path, dir.path().join("images/a.jpg"));
    assert_eq!(a.depth_path, Some(dir.path().join("depth/a.exr")));
    assert_eq!(a.mask_path, Some(dir.path().join("masks/a.png")));
    assert_eq!((a.normal_path.as_ref(), b.normal_path.clone()), (None, Some(dir.path().join("normals/b.exr"))));
    assert_eq!(dataset.extra.keys().collect::<Vec<_>>(), ["aabb_scale", "k1"]);
    assert_error(read_transforms(&path), &path, &["none of the 2 frames"]);
}

#[test]
fn write_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut dataset = read_transforms_unchecked(&instant_ngp(dir.path())).unwrap();
    dataset.frames[0].camera.cam_to_world =
        glam::Mat4::from_rotation_z(0.3) * glam::Mat4::from_translation(glam::Vec3::new(0.1, -2.0, 3.0));
    let out = dir.path().join("out.json");
    write_transforms(&out, &dataset).unwrap();
    let back = read_transforms_unchecked(&out).unwrap();
    assert_eq!(back.extra, dataset.extra);
    for (got, want) in back.frames.iter().zip(&dataset.frames) {
        assert_eq!(got.camera, want.camera);
        assert_eq!(
            (&got.image_path, &got.depth_path, &got.normal_path, &got.mask_path),
            (&want.image_path, &want.depth_path, &want.normal_path, &want.mask_path)
        );
        assert_eq!(got.name, want.name);
    }
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written["frames"][0]["file_path"], "images/a.jpg");
    assert!(written["frames"][0].get("fl_x").is_none(), "frame 0 has the top-level intrinsics");
    assert_eq!(written["frames"][1]["fl_x"], 300.0);
    assert!(written["frames"][1].get("fl_y").is_none());
    assert!(written["camera_angle_x"].as_f64().unwrap() > 0.0);
    assert_eq!(written["frames"][0]["transform_matrix"][3], json!([0.0, 0.0, 0.0, 1.0]));

    dataset.extra.insert("w".into(), json!(3));
    assert_error(write_transforms(&out, &dataset), &out, &["extra key 'w' clashes"]);
    dataset.extra.remove("w");
    dataset.frames[1].camera.intrinsics.fx = -1.0;
    assert_error(write_transforms(&out, &dataset), &out, &["frame 1", "fl_x"]);
    dataset.frames.clear();
    assert_error(write_transforms(&out, &dataset), &out, &["no frames"]);
}

#[test]
fn malformed_files_give_clear_messages() {
    let frame = |extra: serde_json::Value| {
        let mut f = json!({"file_path": "a.png", "transform_matrix": IDENTITY});
        f.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        f
    };
    let cases: Vec<(String, &[&str])> = vec![
        ("{\"frames\": [1,\n 2".into(), &["not valid JSON", "line 2 column"]),
        ("[1, 2]".into(), &["top level is not a JSON object"]),
        (json!({"fl_x": 1, "frames": []}).to_string(), &["no frames"]),
        (json!({"frames": {"a": 1}}).to_string(), &["'frames' is not a list"]),
        (json!({"fl_x": 9, "w": 4, "h": 4, "frames": [{"transform_matrix": IDENTITY}]}).to_string(), &["frame 0: no 'file_path'"]),
        (json!({"fl_x": 9, "w": 4, "h": 4, "frames": [{"file_path": "a.png"}]}).to_string(), &["no 'transform_matrix'"]),
        (
            json!({"fl_x": 9, "w": 4, "h": 4, "frames": [frame(json!({"transform_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}))]}).to_string(),
            &["'transform_matrix' is not 4 rows of 4 numbers"],
        ),
        (
            json!({"fl_x": 9, "w": 4, "h": 4, "frames": [frame(json!({"transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, "x", 1]]}))]}).to_string(),
            &["not 4 rows of 4 numbers"],
        ),
        (
            json!({"fl_x": 9, "w": 4, "h": 4, "frames": [frame(json!({"transform_matrix": [[1e39, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}))]}).to_string(),
            &["non-finite value"],
        ),
        (json!({"w": 4, "h": 4, "frames": [frame(json!({}))]}).to_string(), &["frame 0 (\"a.png\")", "no focal length"]),
        (json!({"fl_x": -3, "w": 4, "h": 4, "frames": [frame(json!({}))]}).to_string(), &["invalid intrinsics", "fl_x = -3"]),
        (json!({"fl_x": 9, "w": 4.5, "h": 4, "frames": [frame(json!({}))]}).to_string(), &["'w' = 4.5"]),
        (json!({"fl_x": "9", "w": 4, "h": 4, "frames": [frame(json!({}))]}).to_string(), &["'fl_x' is not a number"]),
        (json!({"fl_x": 9, "w": 4, "h": 4, "frames": [frame(json!({"depth_file_path": 3}))]}).to_string(), &["'depth_file_path' is not a string"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transforms.json");
    for (text, needles) in cases {
        std::fs::write(&path, &text).unwrap();
        assert_error(read_transforms_unchecked(&path), &path, needles);
    }
}

/// JSON values built from the keys this reader looks at.
fn json_strategy() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|v| json!(v)),
        (-5i64..2000).prop_map(serde_json::Value::from),
        "[a-z./_]{0,8}".prop_map(serde_json::Value::from),
    ];
    let keys = prop::sample::select(vec![
        "frames",
        "file_path",
        "transform_matrix",
        "fl_x",
        "fl_y",
        "cx",
        "cy",
        "w",
        "h",
        "camera_angle_x",
        "camera_angle_y",
        "depth_file_path",
        "mask_file_path",
        "other",
    ]);
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_json_never_panics(value in json_strategy(), text in "[\\[\\]{}\",:0-9a-z_ .e-]{0,80}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transforms.json");
        for content in [value.to_string(), text] {
            std::fs::write(&path, content).unwrap();
            let _ = read_transforms_unchecked(&path);
            let _ = read_transforms(&path);
        }
    }
}

#[test]
fn reads_the_real_lego_dataset() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let path = data.join("nerf_synthetic_lego/transforms_train.json");
    if !path.exists() {
        println!("skipping: ../shared/data absent");
        return;
    }
    let dataset = read_transforms(&path).unwrap();
    assert_eq!(dataset.frames.len(), 100);
    assert!(dataset.warnings.is_empty(), "{:?}", dataset.warnings);
    let k = dataset.frames[0].camera.intrinsics;
    assert_eq!((k.width, k.height), (800, 800));
    assert!((k.fx - 1111.11).abs() < 0.01, "fx = {}", k.fx);
    assert_eq!(dataset.frames[0].name, "r_0");
}
