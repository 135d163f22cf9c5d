//! A capture folder and a keyframe folder on disk, through propagation, to
//! a dataset the trainer reads.

mod common;

use std::sync::atomic::AtomicBool;

use splatdiff_propagate::image::Image;
use splatdiff_propagate::io::{read_capture, read_keyframes, write_frames};
use splatdiff_propagate::metrics::psnr_masked;
use splatdiff_propagate::{propagate, PropagateConfig};

#[test]
fn capture_and_keyframes_on_disk_propagate_to_a_readable_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let t = common::turntable(6, 48);
    let (cap, keys, out) = (dir.path().join("capture"), dir.path().join("keys"), dir.path().join("out"));
    common::write_capture(&t, &cap, &keys, &[0, 2, 4]);
    let capture = read_capture(&cap).unwrap();
    assert_eq!(capture.frames.len(), 6);
    let keyframes = read_keyframes(&keys, &capture).unwrap();
    assert_eq!(keyframes.iter().map(|k| k.index).collect::<Vec<_>>(), vec![0, 2, 4]);
    let (frames, _) =
        propagate(&capture.frames, &keyframes, &PropagateConfig::default(), &|_, _| {}, &AtomicBool::new(false))
            .unwrap();
    write_frames(&out, &capture, &frames).unwrap();
    // The written dataset reads back with the same cameras and new images.
    let back = splatdiff_scene::read_transforms(&out.join("transforms.json")).unwrap();
    assert_eq!(back.frames.len(), 6);
    for (a, b) in back.frames.iter().zip(&capture.dataset.frames) {
        assert_eq!(a.camera, b.camera);
        assert!(a.image_path.starts_with(std::path::absolute(&out).unwrap()));
        assert!(a.depth_path.as_ref().unwrap().is_file());
    }
    let img = Image::read(&back.frames[1].image_path).unwrap();
    let psnr = psnr_masked(&img, &t.truth[1], &t.frames[1].geometry.mask);
    assert!(psnr > 25.0, "frame 1 written at {psnr:.1} dB");
    assert!(out.join("error/r_001.exr").is_file());
}

#[test]
fn keyframe_folder_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = common::turntable(4, 32);
    let (cap, keys) = (dir.path().join("capture"), dir.path().join("keys"));
    common::write_capture(&t, &cap, &keys, &[0]);
    let capture = read_capture(&cap).unwrap();
    // A keyframe naming no frame.
    Image::new(32, 32, 3).write_png(&keys.join("frame_9.png")).unwrap();
    let e = read_keyframes(&keys, &capture).unwrap_err().to_string();
    assert!(e.contains("frame_9.png") && e.contains("names no frame"), "{e}");
    std::fs::remove_file(keys.join("frame_9.png")).unwrap();
    // A resized keyframe.
    Image::new(16, 16, 3).write_png(&keys.join("r_002.png")).unwrap();
    let e = read_keyframes(&keys, &capture).unwrap_err().to_string();
    assert!(e.contains("r_002.png") && e.contains("16x16"), "{e}");
    // An empty folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = read_keyframes(&empty, &capture).unwrap_err().to_string();
    assert!(e.contains("no keyframe images"), "{e}");
}
