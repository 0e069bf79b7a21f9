//! A sample folder in torchvision's ImageFolder layout (`root/<label>/*.png|jpg`, or `*.npy`
//! tensor files): labels and files in sorted order, and the image types it cannot read counted
//! rather than skipped without a word.

use std::path::{Path, PathBuf};

use super::{Sample, check_label, is_npy_name, read_npy_sample};
use crate::error::{Error, Result};
use crate::preprocess::{SampleInput, decode_image_file};

/// One sample file: a `.npy` tensor (by its name), else an image (PNG or JPEG, by content).
pub fn read_sample_file(path: &Path) -> Result<SampleInput> {
    if is_npy_name(path) {
        read_npy_sample(path).map(SampleInput::Tensor)
    } else {
        decode_image_file(path).map(SampleInput::Pixels)
    }
}

/// Image types people keep photos in (cameras write BMP, phones WebP/HEIC) that the built-in
/// decoders do not read: an image folder counts them, so none is left out without a word.
const UNREAD_IMAGE_TYPES: [&str; 9] = [
    "bmp", "webp", "gif", "tif", "tiff", "heic", "heif", "avif", "jxl",
];

/// The lower-cased extension of `path` if it names an image type the decoders do not read.
fn unread_image_type(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    UNREAD_IMAGE_TYPES.contains(&ext.as_str()).then_some(ext)
}

/// Extensions as a user writes them: ".bmp, .webp".
pub(super) fn dotted(types: &[String]) -> String {
    types
        .iter()
        .map(|t| format!(".{t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "npy"
            )
        })
        .unwrap_or(false)
}
/// `root/<label>/*.png|jpg|jpeg|npy`, labels and files in sorted order.
pub struct ImageFolder {
    pub(super) root: PathBuf,
    pub(super) files: Vec<(PathBuf, String)>,
    pub(super) next: usize,
    /// Per label, the image files of types the decoders do not read (left out).
    unread: Vec<UnreadImages>,
}

/// Image files of one label that an [`ImageFolder`] leaves out: types it does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadImages {
    pub label: String,
    pub count: usize,
    /// Their extensions, lower case, each once (sorted).
    pub types: Vec<String>,
}

impl ImageFolder {
    pub fn open(root: &Path, limit: Option<usize>) -> Result<Self> {
        let read_dir = |dir: &Path| -> Result<Vec<PathBuf>> {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
                .collect::<Result<Vec<_>>>()?;
            entries.sort();
            Ok(entries)
        };
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for class_dir in read_dir(root)? {
            if !class_dir.is_dir() {
                continue;
            }
            let label = class_dir
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::data(&class_dir, "folder name is not valid UTF-8"))?
                .to_string();
            check_label(&label, &class_dir)?;
            let (mut readable, mut unread) = (0usize, Vec::new());
            for file in read_dir(&class_dir)? {
                if !file.is_file() {
                    continue;
                }
                if is_image_name(&file) {
                    files.push((file, label.clone()));
                    readable += 1;
                } else if let Some(ext) = unread_image_type(&file) {
                    unread.push(ext);
                }
            }
            if unread.is_empty() {
                continue;
            }
            let count = unread.len();
            unread.sort();
            unread.dedup();
            if readable == 0 {
                // Leaving the label out would drop a class without a word.
                return Err(Error::data(
                    &class_dir,
                    format!(
                        "label '{label}' has {count} image(s), all of types this build does not \
                         decode ({}); convert them to PNG or JPEG, or move the folder out",
                        dotted(&unread)
                    ),
                ));
            }
            skipped.push(UnreadImages {
                label,
                count,
                types: unread,
            });
        }
        if files.is_empty() {
            return Err(Error::data(
                root,
                "no samples found (expected root/<label>/*.png|jpg|jpeg, or *.npy tensors)",
            ));
        }
        if let Some(limit) = limit {
            files.truncate(limit);
        }
        Ok(ImageFolder {
            root: root.into(),
            files,
            next: 0,
            unread: skipped,
        })
    }

    /// Per label, the image files left out because their type is not decoded.
    pub fn unread(&self) -> &[UnreadImages] {
        &self.unread
    }
}

impl Iterator for ImageFolder {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        let (path, label) = self.files.get(self.next)?.clone();
        self.next += 1;
        Some(read_sample_file(&path).map(|input| Sample {
            id: path.display().to_string(),
            label: Some(label),
            input,
        }))
    }
}
