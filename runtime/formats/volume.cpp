// Volumes on disk: NIfTI-1/2 through libnifti2, .npy through npy.h, and HU windowing.
#include "runtime/formats/volume.h"

#include <nifti2_io.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "runtime/error.h"
#include "runtime/formats/atomic_file.h"
#include "runtime/formats/npy.h"

namespace ctsr::io {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct NiftiDeleter {
  void operator()(nifti_image* nim) const { nifti_image_free(nim); }
};
using NiftiPtr = std::unique_ptr<nifti_image, NiftiDeleter>;

std::string dims_string(const nifti_image& nim) {
  std::string s = "[";
  for (int64_t i = 1; i <= nim.dim[0] && i <= 7; ++i) s += (i > 1 ? ", " : "") + std::to_string(nim.dim[i]);
  return s + "]";
}

void check_file_exists(const std::filesystem::path& path) {
  std::error_code ec;
  CTSR_CHECK(std::filesystem::is_regular_file(path, ec), "cannot read volume '", path.string(), "': ",
             std::filesystem::exists(path, ec) ? "not a regular file" : "no such file");
}

// A double as float32; values beyond float's range become NaN (a plain conversion of those is
// undefined), so that refuse_non_finite reports them with NaN and infinities.
float to_float_or_nan(double v) {
  constexpr double kFloatMax = 3.4028234663852886e38;
  return std::fabs(v) <= kFloatMax ? static_cast<float>(v) : std::numeric_limits<float>::quiet_NaN();
}

// Stored values to float32 with the NIfTI scaling y = scl_slope * x + scl_inter, computed in
// double (int32 / int64 values and slopes like 0.1 would lose digits in float); slope 0 (which
// libnifti also reports for a NaN or infinite slope) means the data is not scaled.
template <class T>
void convert_scaled(const void* src, float* dst, int64_t n, double slope, double inter) {
  const T* s = static_cast<const T*>(src);
  for (int64_t i = 0; i < n; ++i)
    dst[i] = to_float_or_nan(slope == 0.0 ? static_cast<double>(s[i]) : slope * static_cast<double>(s[i]) + inter);
}

// A CT value that is NaN or infinite is damage, not data: refused rather than passed on (to
// training, where it would poison the loss) or zeroed silently (as libnifti's own loader does).
void refuse_non_finite(const std::filesystem::path& path, const Tensor& volume) {
  const float* v = volume.data<float>();
  const int64_t n = volume.numel(), nx = volume.dim(2), ny = volume.dim(1);
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]) && bad++ == 0) first = i;
  CTSR_CHECK(bad == 0, "volume '", path.string(), "' has ", bad, " voxel", bad == 1 ? "" : "s",
             " that are not finite float32 values (NaN, infinite or beyond +-3.4e38; the first at x = ", first % nx,
             ", y = ", first / nx % ny, ", z = ", first / nx / ny, "); expected finite values (HU)");
}

// zlib's own words for what went wrong with a gzip stream (a corrupt or truncated .nii.gz), or
// the system's for an I/O error: errors name the cause, not a symptom like "too short".
std::string gz_error_text(gzFile gz) {
  int code = Z_OK;
  const char* text = gzerror(gz, &code);
  if (code == Z_ERRNO) return std::string("I/O error: ") + std::strerror(errno);
  if (code == Z_DATA_ERROR) return std::string("corrupt gzip stream (") + (text ? text : "") + ")";
  if (code == Z_BUF_ERROR) return "the gzip stream ends early (a truncated .gz)";
  return text && *text ? text : "unknown zlib error";
}

struct GzCloser {
  void operator()(gzFile_s* gz) const { gzclose(gz); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

GzPtr open_gz(const std::filesystem::path& path) {
  GzPtr gz(gzopen(path.c_str(), "rb"));
  CTSR_CHECK(gz != nullptr, "cannot open NIfTI '", path.string(), "' for reading: ", std::strerror(errno));
  return gz;
}

// Reads up to n bytes; returns how many were read (fewer only at the end of the data). A zlib
// or I/O error is an error naming the file and `what`. gzread reads plain files too.
uint64_t gz_read(gzFile gz, void* dst, uint64_t n, const std::filesystem::path& path, const char* what) {
  uint64_t done = 0;
  while (done < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<uint64_t>(n - done, uint64_t{1} << 30));
    const int got = gzread(gz, static_cast<char*>(dst) + done, chunk);
    CTSR_CHECK(got >= 0, "cannot read NIfTI '", path.string(), "' (", what, "): ", gz_error_text(gz));
    if (got == 0) break;
    done += static_cast<uint64_t>(got);
  }
  return done;
}

// The first field of a NIfTI header is its size: 348 (NIfTI-1) or 540 (NIfTI-2), in either
// byte order. Checked here so that the commonest wrong file gets a message of ours alone, not
// libnifti's diagnostics on stderr as well. Returns the header's vox_offset as written (libnifti
// raises a value inside the header to the header's size, hiding what the file says).
double check_nifti_header(const std::filesystem::path& path) {
  GzPtr gz = open_gz(path);
  unsigned char b[540] = {};
  const uint64_t got = gz_read(gz.get(), b, sizeof b, path, "the header");
  const uint32_t little = b[0] | b[1] << 8 | b[2] << 16 | uint32_t(b[3]) << 24;
  const uint32_t big = b[3] | b[2] << 8 | b[1] << 16 | uint32_t(b[0]) << 24;
  CTSR_CHECK(got >= 4 && (little == 348 || little == 540 || big == 348 || big == 540), "cannot read NIfTI '",
             path.string(), "': ", got >= 4 ? "its first field (sizeof_hdr) is " + std::to_string(little)
                                            : "it holds only " + std::to_string(got) + " bytes",
             "; expected a NIfTI-1 (348) or NIfTI-2 (540) header");
  const bool swapped = little != 348 && little != 540;
  const uint32_t size = swapped ? big : little;
  CTSR_CHECK(got >= size, "cannot read NIfTI '", path.string(), "': it holds only ", got, " bytes of its ", size,
             "-byte header");
  auto field = [&](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t(b[at + size_t(swapped ? bytes - 1 - i : i)]) << (8 * i);
    return v;
  };
  // libnifti copies dim[1..dim[0]] into fixed arrays of 8 without bounding dim[0] (a fuzzed
  // header with a huge dim[0] overflowed its stack): checked here first.
  const int64_t ndim = size == 540 ? static_cast<int64_t>(field(16, 8)) : static_cast<int16_t>(field(40, 2));
  CTSR_CHECK(ndim >= 1 && ndim <= 7, "cannot read NIfTI '", path.string(), "': dim[0] (the number of dimensions) is ",
             ndim, "; expected 1 to 7");
  if (size == 540) return static_cast<double>(static_cast<int64_t>(field(168, 8)));
  const uint32_t bits = static_cast<uint32_t>(field(108, 4));
  float offset;
  std::memcpy(&offset, &bits, 4);
  return offset;
}

bool is_gzip_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char magic[2] = {};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

// The voxel bytes of a NIfTI image whose header libnifti has read: `bytes` from the image file
// (nim.iname: the .nii itself, or the .img of a pair) at its data offset, in the file's byte
// order. Checked before any allocation: the offset must lie past the header and, for a plain file,
// the data must fit in the file; a gzip stream is inflated piece by piece, so memory grows only
// with the data the file really holds. (libnifti's nifti_image_load allocates what the header
// claims first, and reads a single-file image from any offset the header gives, even one inside
// the header itself.)
std::vector<unsigned char> read_voxel_bytes(const nifti_image& nim, const std::filesystem::path& path,
                                            double vox_offset, uint64_t bytes) {
  const bool single_file = nim.nifti_type == NIFTI_FTYPE_NIFTI1_1 || nim.nifti_type == NIFTI_FTYPE_NIFTI2_1;
  const double header_end = nim.nifti_type == NIFTI_FTYPE_NIFTI2_1 ? 544 : 352;  // header + extension flag
  CTSR_CHECK(std::isfinite(vox_offset) && vox_offset == std::floor(vox_offset) && vox_offset < 0x1p62 &&
                 vox_offset >= (single_file ? header_end : 0.0),
             "NIfTI '", path.string(), "': vox_offset is ", vox_offset, "; expected a whole number at least ",
             single_file ? header_end : 0.0,
             single_file ? " (the voxel data of a single-file NIfTI starts after its header and extension flag)" : "");
  const int64_t offset = nim.iname_offset;
  CTSR_CHECK(offset == static_cast<int64_t>(vox_offset), "NIfTI '", path.string(), "': libnifti reads vox_offset ",
             vox_offset, " as ", offset);
  const std::filesystem::path image = nim.iname != nullptr ? std::filesystem::path(nim.iname) : path;
  std::error_code ec;
  const uintmax_t file_size = std::filesystem::file_size(image, ec);
  CTSR_CHECK(!ec, "cannot read the voxels of NIfTI '", path.string(), "' from '", image.string(), "': ",
             ec.message());
  const bool compressed = is_gzip_file(image);
  if (!compressed)
    CTSR_CHECK(uint64_t(offset) <= file_size && bytes <= file_size - uint64_t(offset), "NIfTI '", path.string(),
               "' is truncated: dims ", dims_string(nim), " of ", nifti_datatype_to_string(nim.datatype), " need ",
               bytes, " bytes from vox_offset ", offset, " but '", image.string(), "' has ", file_size, " bytes");
  GzPtr gz = open_gz(image);
  CTSR_CHECK(gzseek(gz.get(), offset, SEEK_SET) == offset, "NIfTI '", path.string(), "': cannot reach vox_offset ",
             offset, " of '", image.string(), "': ", compressed ? gz_error_text(gz.get()) : "the file is shorter");
  std::vector<unsigned char> data;
  constexpr uint64_t kPiece = uint64_t{64} << 20;
  while (data.size() < bytes) {
    const uint64_t before = data.size();
    const uint64_t want = compressed ? std::min(kPiece, bytes - before) : bytes - before;
    data.resize(before + want);
    const uint64_t got = gz_read(gz.get(), data.data() + before, want, path, "the voxel data");
    CTSR_CHECK(got == want, "NIfTI '", path.string(), "' is truncated: dims ", dims_string(nim), " of ",
               nifti_datatype_to_string(nim.datatype), " need ", bytes, " bytes of voxel data but ",
               compressed ? "its gzip stream ends after " : "the file holds ", before + got);
  }
  if (nim.byteorder != nifti_short_order() && nim.nbyper > 1)
    nifti_swap_Nbytes(static_cast<int64_t>(bytes / uint64_t(nim.nbyper)), nim.nbyper, data.data());
  return data;
}

Volume read_nifti(const std::filesystem::path& path) {
  check_file_exists(path);
  const double vox_offset = check_nifti_header(path);
  // Header first (read_data 0), so a wrong file is refused before its voxels are read. libnifti
  // prints its own diagnostics to stderr and returns NULL; the error here names the file.
  NiftiPtr nim(nifti_image_read(path.c_str(), 0));
  CTSR_CHECK(nim != nullptr, "cannot read NIfTI '", path.string(),
             "': libnifti could not parse its header (see its message above); expected a NIfTI-1 or NIfTI-2 file");
  CTSR_CHECK(nim->nifti_type != NIFTI_FTYPE_ANALYZE && nim->nifti_type != NIFTI_FTYPE_ASCII, "cannot read NIfTI '",
             path.string(), "': it is an ANALYZE 7.5 or ASCII file; expected NIfTI-1 or NIfTI-2");
  const int64_t ndim = nim->dim[0];
  CTSR_CHECK(ndim >= 3, "NIfTI '", path.string(), "' has dims ", dims_string(*nim), " (", ndim,
             "-D); expected a 3-D volume (nx, ny, nz)");
  for (int64_t i = 4; i <= ndim && i <= 7; ++i)
    CTSR_CHECK(nim->dim[i] == 1, "NIfTI '", path.string(), "' has dims ", dims_string(*nim), " (dim[", i,
               "] = ", nim->dim[i], "); expected a 3-D volume (nx, ny, nz), not a series");
  const int64_t nx = nim->dim[1], ny = nim->dim[2], nz = nim->dim[3];
  CTSR_CHECK(nx >= 1 && ny >= 1 && nz >= 1, "NIfTI '", path.string(), "' has dims ", dims_string(*nim),
             "; expected a 3-D volume with every dim at least 1");

  const int datatype = nim->datatype;
  switch (datatype) {
    case DT_UINT8: case DT_INT8: case DT_INT16: case DT_UINT16: case DT_INT32: case DT_UINT32: case DT_INT64:
    case DT_UINT64: case DT_FLOAT32: case DT_FLOAT64: break;
    default:
      CTSR_FAIL("NIfTI '", path.string(), "' stores datatype ", nifti_datatype_to_string(datatype), " (", datatype,
                "); expected a real integer or float type (uint8, int16, int32, float32, float64, ...)");
  }
  const int64_t dims[3] = {nx, ny, nz};
  const std::string where = "NIfTI '" + path.string() + "' dims";
  const uint64_t bytes = checked_bytes(checked_numel(dims, 3, where), size_t(nim->nbyper), where);
  const std::vector<unsigned char> raw = read_voxel_bytes(*nim, path, vox_offset, bytes);

  // x fastest in the file is W fastest in [D, H, W]: the same order, no transpose.
  Volume v;
  v.data = Tensor::empty({nz, ny, nx}, DType::float32, Device::cpu());
  float* dst = v.data.data<float>();
  const int64_t n = v.data.numel();
  const void* src = raw.data();
  const double slope = std::isfinite(nim->scl_slope) ? nim->scl_slope : 0.0;
  const double inter = std::isfinite(nim->scl_inter) ? nim->scl_inter : 0.0;
  switch (datatype) {
    case DT_UINT8: convert_scaled<uint8_t>(src, dst, n, slope, inter); break;
    case DT_INT8: convert_scaled<int8_t>(src, dst, n, slope, inter); break;
    case DT_INT16: convert_scaled<int16_t>(src, dst, n, slope, inter); break;
    case DT_UINT16: convert_scaled<uint16_t>(src, dst, n, slope, inter); break;
    case DT_INT32: convert_scaled<int32_t>(src, dst, n, slope, inter); break;
    case DT_UINT32: convert_scaled<uint32_t>(src, dst, n, slope, inter); break;
    case DT_INT64: convert_scaled<int64_t>(src, dst, n, slope, inter); break;
    case DT_UINT64: convert_scaled<uint64_t>(src, dst, n, slope, inter); break;
    case DT_FLOAT32: convert_scaled<float>(src, dst, n, slope, inter); break;
    case DT_FLOAT64: convert_scaled<double>(src, dst, n, slope, inter); break;
  }
  refuse_non_finite(path, v.data);

  VolumeGeometry& g = v.geometry;
  g.spacing_xyz = {std::fabs(nim->dx), std::fabs(nim->dy), std::fabs(nim->dz)};
  const nifti_dmat44* m = nim->sform_code > 0 ? &nim->sto_xyz : nim->qform_code > 0 ? &nim->qto_xyz : nullptr;
  if (m) {
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) g.affine[r][c] = m->m[r][c];
  } else {
    g.affine = {{{g.spacing_xyz[0], 0, 0, 0}, {0, g.spacing_xyz[1], 0, 0}, {0, 0, g.spacing_xyz[2], 0}, {0, 0, 0, 1}}};
  }
  return v;
}

// The float32 [D, H, W] data of a volume on the host, checked: what every writer starts from.
Tensor volume_data_for_writing(const std::filesystem::path& path, const Volume& volume) {
  const Tensor& t = volume.data;
  CTSR_CHECK(t.defined(), "cannot write volume '", path.string(), "': its data tensor is undefined");
  CTSR_CHECK(t.ndim() == 3, "cannot write volume '", path.string(), "': data has shape ", t.shape().str(),
             "; expected [D, H, W]");
  for (int i = 0; i < 3; ++i)
    CTSR_CHECK(t.dim(i) >= 1, "cannot write volume '", path.string(), "': data has shape ", t.shape().str(),
               "; expected every dimension at least 1");
  if (t.dtype() == DType::float32) return t.device().is_host_memory() ? t : t.to(Device::cpu());
  const Tensor host = t.device().is_host_memory() ? t : t.to(Device::cpu());
  Tensor out = Tensor::empty(t.shape(), DType::float32, Device::cpu());
  float* dst = out.data<float>();
  const int64_t n = t.numel();
  visit_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = static_cast<const T*>(host.raw_data());
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  });
  return out;
}

// The NIfTI-1 header through libnifti (so the qform quaternion and every field are encoded as
// the library reads them back), followed by the 4-byte extension flag and the data. The bytes are
// written here rather than by nifti_image_write, which in libnifti 3.0 returns nothing and does
// not report a failed data write (a full disk would leave a short file that looks written).
std::string nifti1_header_bytes(const std::filesystem::path& path, const Tensor& data, const VolumeGeometry& g) {
  const int64_t nz = data.dim(0), ny = data.dim(1), nx = data.dim(2);
  const char* axis_names[3] = {"nx", "ny", "nz"};
  const int64_t sizes[3] = {nx, ny, nz};
  for (int i = 0; i < 3; ++i)
    CTSR_CHECK(sizes[i] <= 32767, "cannot write NIfTI-1 '", path.string(), "': ", axis_names[i], " = ", sizes[i],
               " (shape ", data.shape().str(), "); NIfTI-1 dims are at most 32767");
  for (int i = 0; i < 3; ++i)
    CTSR_CHECK(std::isfinite(g.spacing_xyz[i]) && g.spacing_xyz[i] > 0, "cannot write NIfTI '", path.string(),
               "': spacing_xyz[", i, "] = ", g.spacing_xyz[i], "; expected a positive voxel size in mm");
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c)
      CTSR_CHECK(std::isfinite(g.affine[r][c]), "cannot write NIfTI '", path.string(), "': affine[", r, "][", c,
                 "] = ", g.affine[r][c], "; expected a finite number");
  CTSR_CHECK(g.affine[3][0] == 0 && g.affine[3][1] == 0 && g.affine[3][2] == 0 && g.affine[3][3] == 1,
             "cannot write NIfTI '", path.string(), "': the affine's last row is [", g.affine[3][0], ", ",
             g.affine[3][1], ", ", g.affine[3][2], ", ", g.affine[3][3], "]; expected [0, 0, 0, 1]");

  const int64_t dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
  NiftiPtr nim(nifti_make_new_nim(dims, DT_FLOAT32, 0));
  CTSR_CHECK(nim != nullptr, "cannot write NIfTI '", path.string(), "': libnifti could not make a header");
  nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
  nim->dx = nim->pixdim[1] = g.spacing_xyz[0];
  nim->dy = nim->pixdim[2] = g.spacing_xyz[1];
  nim->dz = nim->pixdim[3] = g.spacing_xyz[2];
  nim->xyz_units = NIFTI_UNITS_MM;
  nim->scl_slope = 1.0;  // explicit identity: the data is already in its units (HU)
  nim->scl_inter = 0.0;
  // Both transforms from the one affine: the sform exactly (to float32), the qform as its
  // rotation, for readers that look only at the qform. The quaternion scales by pixdim, so the
  // two agree when the spacing is the affine's column norms, as it is for a volume read from disk.
  nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
  nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) nim->sto_xyz.m[r][c] = g.affine[r][c];
  double qdx, qdy, qdz;
  nifti_dmat44_to_quatern(nim->sto_xyz, &nim->quatern_b, &nim->quatern_c, &nim->quatern_d, &nim->qoffset_x,
                          &nim->qoffset_y, &nim->qoffset_z, &qdx, &qdy, &qdz, &nim->qfac);
  std::strncpy(nim->descrip, "ctsr", sizeof nim->descrip - 1);
  nifti_set_iname_offset(nim.get(), 1);

  nifti_1_header header;
  static_assert(sizeof(nifti_1_header) == 348, "NIfTI-1 headers are 348 bytes");
  CTSR_CHECK(nifti_convert_nim2n1hdr(nim.get(), &header) == 0, "cannot write NIfTI '", path.string(),
             "': libnifti could not encode the header (shape ", data.shape().str(), ")");
  std::string bytes(reinterpret_cast<const char*>(&header), sizeof header);
  bytes.resize(static_cast<size_t>(nim->iname_offset), '\0');  // extension flag 0: no extensions
  return bytes;
}

void write_nifti(const std::filesystem::path& path, const Tensor& data, const VolumeGeometry& geometry,
                 bool compressed) {
  const std::string header = nifti1_header_bytes(path, data, geometry);
  const char* voxels = static_cast<const char*>(data.raw_data());
  const size_t nbytes = data.nbytes();
  if (!compressed) {
    write_file_atomically(path, [&](std::ostream& out) {
      out.write(header.data(), std::streamsize(header.size()));
      out.write(voxels, std::streamsize(nbytes));
    });
    return;
  }
  AtomicFile file(path);
  gzFile gz = gzopen(file.temp_path().c_str(), "wb6");
  CTSR_CHECK(gz != nullptr, "cannot open '", file.temp_path().string(), "' for writing (for '", path.string(), "')");
  // gzwrite takes an unsigned count: large volumes go in pieces.
  auto put = [&](const char* p, size_t n) {
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n, size_t(1) << 30));
      if (gzwrite(gz, p, chunk) != int(chunk)) return false;
      p += chunk;
      n -= chunk;
    }
    return true;
  };
  const bool written = put(header.data(), header.size()) && put(voxels, nbytes);
  const bool closed = gzclose(gz) == Z_OK;
  CTSR_CHECK(written && closed, "writing '", path.string(), "' failed (disk full or I/O error)");
  file.commit();
}

void check_window(const HuWindow& w, const char* what) {
  CTSR_CHECK(std::isfinite(w.lo) && std::isfinite(w.hi) && w.lo < w.hi, what, ": HU window [", w.lo, ", ", w.hi,
             "]; expected finite lo < hi");
}

// y = f(x) elementwise on a host copy, in double, back to the input's dtype and device.
template <class F>
Tensor map_values(const Tensor& x, const char* what, F&& f) {
  x.check_defined(what);
  CTSR_CHECK(x.dtype() == DType::float32 || x.dtype() == DType::float64, what, ": tensor is ", dtype_name(x.dtype()),
             "; expected float32 or float64");
  const Tensor host = x.device().is_host_memory() ? x : x.to(Device::cpu());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cpu());
  const int64_t n = x.numel();
  if (x.dtype() == DType::float32) {
    const float* s = host.data<float>();
    float* d = out.data<float>();
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(f(static_cast<double>(s[i])));
  } else {
    const double* s = host.data<double>();
    double* d = out.data<double>();
    for (int64_t i = 0; i < n; ++i) d[i] = f(s[i]);
  }
  return x.device() == Device::cpu() ? out : out.to(x.device());
}

// The same in place when x is a float32 tensor in host memory (no second volume); otherwise x is
// replaced by map_values' result.
template <class F>
void map_values_inplace(Tensor& x, const char* what, F&& f) {
  x.check_defined(what);
  if (x.dtype() != DType::float32 || !x.device().is_host_memory()) {
    x = map_values(x, what, std::forward<F>(f));
    return;
  }
  float* d = x.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(f(static_cast<double>(d[i])));
}

}  // namespace

VolumeFormat volume_format(const std::filesystem::path& path) {
  const std::string name = path.filename().string();
  if (ends_with(name, ".nii.gz") && name.size() > 7) return VolumeFormat::nifti_gz;
  if (ends_with(name, ".nii") && name.size() > 4) return VolumeFormat::nifti;
  if (ends_with(name, ".npy") && name.size() > 4) return VolumeFormat::npy;
  // A folder (existing, or named with a trailing separator or without an extension) is a series.
  if (name.empty() || path.extension().empty() || is_dicom_path(path)) return VolumeFormat::dicom;
  CTSR_FAIL("volume '", path.string(), "': unknown file type; expected a name ending in .nii, .nii.gz or .npy, ",
            "a DICOM file (.dcm) or a DICOM series folder");
}

Volume read_volume(const std::filesystem::path& path, const VolumeReadOptions& options) {
  const VolumeFormat format = volume_format(path);
  if (format == VolumeFormat::dicom) {
    DicomReadOptions dicom;
    dicom.series_uid = options.series_uid;
    return read_dicom(path, dicom);
  }
  CTSR_CHECK(options.series_uid.empty(), "volume '", path.string(), "': a series UID (", options.series_uid,
             ") was given, but the file is not DICOM");
  if (format != VolumeFormat::npy) return read_nifti(path);

  check_file_exists(path);
  const Tensor raw = read_npy(path);
  CTSR_CHECK(raw.ndim() == 3, "volume '", path.string(), "' has shape ", raw.shape().str(),
             "; expected a 3-D volume [D, H, W]");
  Volume v;
  if (raw.dtype() == DType::float32) {
    v.data = raw;
  } else {
    v.data = Tensor::empty(raw.shape(), DType::float32, Device::cpu());
    float* dst = v.data.data<float>();
    const int64_t n = raw.numel();
    visit_dtype(raw.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(raw.raw_data());
      for (int64_t i = 0; i < n; ++i) dst[i] = to_float_or_nan(static_cast<double>(src[i]));
    });
  }
  refuse_non_finite(path, v.data);
  return v;  // .npy carries no geometry: unit spacing, identity affine
}

void write_volume(const std::filesystem::path& path, const Volume& volume) {
  const VolumeFormat format = volume_format(path);
  const Tensor data = volume_data_for_writing(path, volume);
  switch (format) {
    case VolumeFormat::npy: write_npy(path, data); return;
    case VolumeFormat::nifti: write_nifti(path, data, volume.geometry, false); return;
    case VolumeFormat::nifti_gz: write_nifti(path, data, volume.geometry, true); return;
    case VolumeFormat::dicom: write_dicom_series(path, data, volume.geometry); return;
  }
}

HuWindow parse_hu_window(const std::string& text) {
  const char* expectation = "; expected 'lo,hi' in HU with lo < hi, e.g. '-200,200'";
  const size_t comma = text.find(',');
  CTSR_CHECK(comma != std::string::npos && text.find(',', comma + 1) == std::string::npos, "HU window '", text,
             "' is not two numbers separated by one comma", expectation);
  auto number = [&](const std::string& part, const char* which) {
    // std::stod accepts a prefix ("12abc"); the whole part must be the number.
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    while (used < part.size() && std::isspace(static_cast<unsigned char>(part[used]))) ++used;
    CTSR_CHECK(used > 0 && used == part.size() && std::isfinite(v), "HU window '", text, "': ", which, " '", part,
               "' is not a number", expectation);
    CTSR_CHECK(std::fabs(v) <= std::numeric_limits<float>::max(), "HU window '", text, "': ", which, " ", part,
               " is beyond float32's range", expectation);
    return v;
  };
  const double lo = number(text.substr(0, comma), "lo");
  const double hi = number(text.substr(comma + 1), "hi");
  CTSR_CHECK(lo < hi, "HU window '", text, "': lo ", lo, " is not below hi ", hi, expectation);
  return {static_cast<float>(lo), static_cast<float>(hi)};
}

Tensor hu_to_unit(const Tensor& hu, const HuWindow& window) {
  check_window(window, "hu_to_unit");
  const double lo = window.lo, hi = window.hi;
  // Divided rather than multiplied by a reciprocal: window edges and midpoints map exactly.
  return map_values(hu, "hu_to_unit", [=](double x) { return 2.0 * (std::clamp(x, lo, hi) - lo) / (hi - lo) - 1.0; });
}

void hu_to_unit_inplace(Tensor& hu, const HuWindow& window) {
  check_window(window, "hu_to_unit");
  const double lo = window.lo, hi = window.hi;
  map_values_inplace(hu, "hu_to_unit", [=](double x) { return 2.0 * (std::clamp(x, lo, hi) - lo) / (hi - lo) - 1.0; });
}

Tensor unit_to_hu(const Tensor& unit, const HuWindow& window) {
  check_window(window, "unit_to_hu");
  const double lo = window.lo, half_width = 0.5 * (double(window.hi) - double(window.lo));
  return map_values(unit, "unit_to_hu", [=](double u) { return (u + 1.0) * half_width + lo; });
}

void unit_to_hu_inplace(Tensor& unit, const HuWindow& window) {
  check_window(window, "unit_to_hu");
  const double lo = window.lo, half_width = 0.5 * (double(window.hi) - double(window.lo));
  map_values_inplace(unit, "unit_to_hu", [=](double u) { return (u + 1.0) * half_width + lo; });
}

Volume read_volume_unit(const std::filesystem::path& path, const HuWindow& window,
                        const VolumeReadOptions& options) {
  Volume v = read_volume(path, options);
  if (volume_format(path) != VolumeFormat::npy) hu_to_unit_inplace(v.data, window);
  return v;
}

}  // namespace ctsr::io
