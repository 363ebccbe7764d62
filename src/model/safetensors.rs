//! Safetensors checkpoints, single-file or sharded, read tensor by tensor.
//!
//! Headers are validated before any tensor data is touched: the header length is bounded
//! (the format's own 100 MB cap, and the file size), the header is parsed into the
//! `safetensors` crate's `Metadata` (which checks dtype × shape against the offsets and that
//! offsets are contiguous), and the data section must end exactly at the end of the file.
//! Each tensor is then read with one `read_exact` of its validated byte range, so a
//! checkpoint never sits in memory twice.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError};

use super::weights::TensorStore;
use crate::{Error, Result};

/// The safetensors format's own cap on header size.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Cap on the size of `model.safetensors.index.json`.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Cap on the number of shards an index may name.
pub const MAX_SHARDS: usize = 4096;

/// Parse and validate the header of a safetensors stream of `file_len` bytes.
/// Returns the metadata and the absolute offset where tensor data starts.
pub fn read_header<R: Read>(r: &mut R, file_len: u64) -> Result<(Metadata, u64), SafeTensorError> {
    let mut len_bytes = [0u8; 8];
    if file_len < 8 {
        return Err(SafeTensorError::HeaderTooSmall);
    }
    r.read_exact(&mut len_bytes)?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(SafeTensorError::HeaderTooLarge);
    }
    // `n <= file_len - 8` before allocating n bytes.
    if n > file_len - 8 {
        return Err(SafeTensorError::InvalidHeaderLength);
    }
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header)?;
    let text = std::str::from_utf8(&header).map_err(SafeTensorError::InvalidHeader)?;
    let raw: RawHeader =
        serde_json::from_str(text).map_err(SafeTensorError::InvalidHeaderDeserialization)?;
    let mut tensors: Vec<(String, TensorInfo)> = raw.tensors.into_iter().collect();
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    // `Metadata::new` runs the crate's validation (contiguous offsets, sizes, overflow).
    let metadata = Metadata::new(raw.metadata, tensors)?;
    let data_start = 8 + n;
    if data_start.checked_add(metadata.data_len() as u64) != Some(file_len) {
        return Err(SafeTensorError::MetadataIncompleteBuffer);
    }
    Ok((metadata, data_start))
}

#[derive(serde::Deserialize)]
struct RawHeader {
    #[serde(rename = "__metadata__")]
    metadata: Option<HashMap<String, String>>,
    #[serde(flatten)]
    tensors: HashMap<String, TensorInfo>,
}

struct Shard {
    path: PathBuf,
    file: Mutex<File>,
    data_start: u64,
    metadata: Metadata,
}

/// One or more safetensors files addressed by tensor name.
pub(crate) struct SafetensorsStore {
    shards: Vec<Shard>,
    /// tensor name -> shard index
    index: HashMap<String, usize>,
}

impl SafetensorsStore {
    /// Open and validate one file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_shards(&[path.to_path_buf()])
    }

    /// Open `model.safetensors.index.json`, validate it and every shard it names.
    pub fn open_index(index_path: &Path) -> Result<Self> {
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let shard_err = |why: String| Error::ShardIndex {
            path: index_path.to_path_buf(),
            why,
        };
        let text = read_small_file(index_path, MAX_INDEX_BYTES)?;
        let index: ShardIndexFile =
            serde_json::from_slice(&text).map_err(|e| shard_err(e.to_string()))?;
        let mut files: Vec<String> = index.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(shard_err("weight_map is empty".into()));
        }
        if files.len() > MAX_SHARDS {
            return Err(shard_err(format!(
                "{} shards (max {MAX_SHARDS})",
                files.len()
            )));
        }
        for f in &files {
            // A shard must be a plain file name inside the model directory.
            let p = Path::new(f);
            let plain = p.components().count() == 1
                && matches!(p.components().next(), Some(std::path::Component::Normal(_)));
            if !plain {
                return Err(shard_err(format!(
                    "shard `{f}` is not a file in the model directory"
                )));
            }
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let store = Self::open_shards(&paths)?;
        // Every tensor the index names must be in the shard it says.
        for (name, file) in &index.weight_map {
            let shard = files.binary_search(file).expect("file listed above");
            match store.index.get(name) {
                Some(&s) if s == shard => {}
                Some(&s) => {
                    return Err(shard_err(format!(
                        "tensor `{name}` is in `{}`, index says `{file}`",
                        store.shards[s].path.display()
                    )))
                }
                None => return Err(shard_err(format!("tensor `{name}` not found in `{file}`"))),
            }
        }
        Ok(store)
    }

    fn open_shards(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let mut file = super::source::open_regular(path)?;
            let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            let (metadata, data_start) =
                read_header(&mut file, file_len).map_err(|source| Error::Safetensors {
                    path: path.clone(),
                    source,
                })?;
            for name in metadata.offset_keys() {
                if index.insert(name.clone(), i).is_some() {
                    return Err(Error::ShardIndex {
                        path: path.clone(),
                        why: format!("tensor `{name}` appears in more than one shard"),
                    });
                }
            }
            shards.push(Shard {
                path: path.clone(),
                file: Mutex::new(file),
                data_start,
                metadata,
            });
        }
        Ok(Self { shards, index })
    }

    fn info(&self, name: &str) -> Option<(&Shard, &TensorInfo)> {
        let shard = &self.shards[*self.index.get(name)?];
        Some((shard, shard.metadata.info(name)?))
    }

    /// The files this store reads.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.shards.iter().map(|s| s.path.clone()).collect()
    }
}

#[derive(serde::Deserialize)]
struct ShardIndexFile {
    weight_map: BTreeMap<String, String>,
}

/// A model's small metadata file (config, shard index) whole, at most `max` bytes: see
/// [`super::source::read_regular`].
pub(crate) fn read_small_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    super::source::read_regular(path, max, "model metadata file")
}

fn candle_dtype(name: &str, dtype: Dtype) -> Result<DType> {
    Ok(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::U32 => DType::U32,
        Dtype::U8 => DType::U8,
        other => {
            return Err(Error::UnsupportedDtype {
                name: name.into(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

impl TensorStore for SafetensorsStore {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.info(name).map(|(_, i)| i.shape.clone())
    }

    fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (shard, info) = self
            .info(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        let src = candle_dtype(name, info.dtype)?;
        let (start, end) = info.data_offsets;
        let mut bytes = vec![0u8; end - start];
        {
            let mut f = shard.file.lock().unwrap_or_else(|p| p.into_inner());
            f.seek(SeekFrom::Start(shard.data_start + start as u64))
                .and_then(|_| f.read_exact(&mut bytes))
                .map_err(|e| Error::io(&shard.path, e))?;
        }
        let t = Tensor::from_raw_buffer(&bytes, src, &info.shape, &Device::Cpu)?;
        drop(bytes);
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    fn inventory(&self) -> BTreeMap<String, (String, Vec<usize>)> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.metadata
                    .tensors()
                    .into_iter()
                    .map(|(k, v)| (k, (format!("{:?}", v.dtype), v.shape.clone())))
            })
            .collect()
    }
}
