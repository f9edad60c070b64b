//! One typed column of the index, owned (just built) or borrowed from a memory-mapped file.

use std::ops::Range;
use std::sync::Arc;

use bytemuck::Pod;
use memmap2::Mmap;

/// A column of `T` values: a `Vec` after a build, a byte range of the mapped file after an
/// open. The range's alignment and length were checked when the file was opened.
#[derive(Debug, Clone)]
pub(crate) enum Column<T> {
    Owned(Vec<T>),
    Mapped { map: Arc<Mmap>, bytes: Range<usize> },
}

impl<T: Pod> Column<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            Column::Owned(v) => v,
            // Checked at open (`file::column`), so this cannot fail; an empty slice would make
            // every later length check fail loudly rather than read out of bounds.
            Column::Mapped { map, bytes } => {
                bytemuck::try_cast_slice(&map[bytes.clone()]).unwrap_or(&[])
            }
        }
    }

    pub fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.as_slice())
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
}

impl<T> Default for Column<T> {
    fn default() -> Self {
        Column::Owned(Vec::new())
    }
}
