//! Scene data shared by every stage of splatdiff: cameras and their
//! conventions, posed-image datasets in the `transforms.json` format, float
//! image maps (depth, normals, masks), Gaussian splat file formats, and a CPU
//! rasterizer that turns a triangle mesh into exact depth/normal/mask passes.

pub mod atomic;
pub mod camera;
pub mod error;
pub mod maps;
pub mod ply;
pub mod raster;
pub mod splat_file;
pub mod transforms;

pub use camera::{Camera, Intrinsics};
pub use error::{Result, SceneError};
pub use maps::FloatMap;
pub use ply::{read_splats, write_splats, GaussianSplats, PlyTable};
pub use transforms::{read_transforms, write_transforms, Dataset, Frame};
