#include "data/token_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "data/h5.h"
#include "data/sha256.h"
#include "data/tokenizer.h"
#include "framework/core/error.h"

namespace longnet::data {
namespace fs = std::filesystem;
namespace {

static_assert(std::endian::native == std::endian::little,
              "tokens_sha256 hashes the stored little-endian bytes; add a byte swap for this host");

constexpr const char* kWhere = "token_store";
constexpr size_t kChunkBytes = size_t{1} << 20;  // HDF5's default chunk cache is 1 MiB
constexpr hsize_t kOffsetChunk = kChunkBytes / sizeof(uint64_t);

// --- attributes

void write_attribute(hid_t obj, const char* name, hid_t type, const void* value) {
  h5::Id space = h5::check_id(H5Screate(H5S_SCALAR), kWhere, "creating a dataspace");
  h5::Id attr = h5::check_id(H5Acreate2(obj, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                             kWhere, std::string("creating attribute ") + name);
  h5::check(H5Awrite(attr.get(), type, value), kWhere, std::string("writing attribute ") + name);
}

void write_int_attribute(hid_t obj, const char* name, int64_t value) {
  write_attribute(obj, name, H5T_NATIVE_INT64, &value);
}

void write_string_attribute(hid_t obj, const char* name, const std::string& value) {
  h5::Id type = h5::check_id(H5Tcopy(H5T_C_S1), kWhere, "creating a string type");
  h5::check(H5Tset_size(type.get(), H5T_VARIABLE), kWhere, "sizing a string type");
  h5::check(H5Tset_cset(type.get(), H5T_CSET_UTF8), kWhere, "setting a string type's charset");
  const char* p = value.c_str();
  write_attribute(obj, name, type.get(), &p);
}

h5::Id open_attribute(hid_t obj, const std::string& path, const char* name) {
  const htri_t exists = H5Aexists(obj, name);
  h5::check(exists, kWhere, "reading the attributes of " + path);
  LN_CHECK(exists > 0, "[", kWhere, "] ", path, " is not a longnet token store: attribute '", name,
           "' is missing");
  return h5::check_id(H5Aopen(obj, name, H5P_DEFAULT), kWhere,
                      path + ": cannot open attribute " + name);
}

int64_t read_int_attribute(hid_t obj, const std::string& path, const char* name) {
  h5::Id attr = open_attribute(obj, path, name);
  h5::Id type = h5::check_id(H5Aget_type(attr.get()), kWhere, path + ": attribute type");
  LN_CHECK(H5Tget_class(type.get()) == H5T_INTEGER, "[", kWhere, "] ", path, ": attribute '", name,
           "' should be an integer");
  int64_t value = 0;
  h5::check(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), kWhere,
            path + ": cannot read attribute " + name);
  return value;
}

std::string read_string_attribute(hid_t obj, const std::string& path, const char* name) {
  h5::Id attr = open_attribute(obj, path, name);
  h5::Id type = h5::check_id(H5Aget_type(attr.get()), kWhere, path + ": attribute type");
  LN_CHECK(H5Tget_class(type.get()) == H5T_STRING, "[", kWhere, "] ", path, ": attribute '", name,
           "' should be a string");
  if (H5Tis_variable_str(type.get()) > 0) {
    char* p = nullptr;
    h5::check(H5Aread(attr.get(), type.get(), &p), kWhere, path + ": cannot read attribute " + name);
    std::string value = p ? p : "";
    H5free_memory(p);
    return value;
  }
  std::string value(H5Tget_size(type.get()), '\0');
  h5::check(H5Aread(attr.get(), type.get(), value.data()), kWhere,
            path + ": cannot read attribute " + name);
  value.resize(std::strlen(value.c_str()));
  return value;
}

// --- datasets

h5::Id create_extendible(hid_t file, const char* name, hid_t type, hsize_t chunk) {
  const hsize_t dims = 0, maxdims = H5S_UNLIMITED;
  h5::Id space = h5::check_id(H5Screate_simple(1, &dims, &maxdims), kWhere, "creating a dataspace");
  h5::Id dcpl = h5::check_id(H5Pcreate(H5P_DATASET_CREATE), kWhere, "creating properties");
  h5::check(H5Pset_chunk(dcpl.get(), 1, &chunk), kWhere, "setting the chunk size");
  // Every element is written, so HDF5 need not write fill values first.
  h5::check(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), kWhere, "setting the fill time");
  return h5::check_id(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                      kWhere, std::string("creating dataset ") + name);
}

// Appends `count` elements of memory type `mem_type` at `at`, growing the dataset.
void append(hid_t dataset, hid_t mem_type, hsize_t at, hsize_t count, const void* data,
            const std::string& path) {
  if (count == 0) return;
  const hsize_t size = at + count;
  h5::check(H5Dset_extent(dataset, &size), kWhere, "growing a dataset of " + path);
  h5::Id file_space = h5::check_id(H5Dget_space(dataset), kWhere, "dataspace");
  h5::check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &at, nullptr, &count, nullptr),
            kWhere, "selecting");
  h5::Id mem_space = h5::check_id(H5Screate_simple(1, &count, nullptr), kWhere, "dataspace");
  h5::check(H5Dwrite(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data),
            kWhere, "writing to " + path + " (disk full?)");
}

// Reads elements [start, start + count) as `mem_type` into out.
void read_slice(hid_t dataset, hid_t mem_type, hsize_t start, hsize_t count, void* out,
                const std::string& what) {
  if (count == 0) return;
  h5::Id file_space = h5::check_id(H5Dget_space(dataset), kWhere, "dataspace");
  h5::check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr),
            kWhere, "selecting");
  h5::Id mem_space = h5::check_id(H5Screate_simple(1, &count, nullptr), kWhere, "dataspace");
  h5::check(H5Dread(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out), kWhere,
            "cannot read " + what + ": the file is truncated or corrupt");
}

// A 1-D unsigned integer dataset: its length and element size (bytes).
struct DatasetShape {
  int64_t length;
  size_t element_bytes;
};

DatasetShape inspect_dataset(hid_t dataset, const std::string& path, const char* name) {
  h5::Id type = h5::check_id(H5Dget_type(dataset), kWhere, path + ": type of " + name);
  const bool is_unsigned = H5Tget_class(type.get()) == H5T_INTEGER &&
                           H5Tget_sign(type.get()) == H5T_SGN_NONE;
  h5::Id space = h5::check_id(H5Dget_space(dataset), kWhere, path + ": dataspace of " + name);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  hsize_t dims = 0;
  if (rank == 1) H5Sget_simple_extent_dims(space.get(), &dims, nullptr);
  LN_CHECK(is_unsigned && rank == 1, "[", kWhere, "] ", path, ": /", name,
           " should be a 1-D unsigned integer dataset");
  return {static_cast<int64_t>(dims), H5Tget_size(type.get())};
}

h5::Id open_dataset(hid_t file, const std::string& path, const char* name) {
  const htri_t exists = H5Lexists(file, name, H5P_DEFAULT);
  h5::check(exists, kWhere, "reading the layout of " + path);
  LN_CHECK(exists > 0, "[", kWhere, "] ", path, " is not a longnet token store: dataset /", name,
           " is missing");
  // The chunk cache holds a few chunks, so windows that straddle chunks are read once.
  h5::Id dapl = h5::check_id(H5Pcreate(H5P_DATASET_ACCESS), kWhere, "creating properties");
  h5::check(H5Pset_chunk_cache(dapl.get(), 521, 4 * kChunkBytes, 0.75), kWhere, "chunk cache");
  return h5::check_id(H5Dopen2(file, name, dapl.get()), kWhere,
                      path + ": cannot open /" + name + " (truncated or corrupt file)");
}

std::vector<uint64_t> read_offsets(hid_t file, const std::string& path, const char* name,
                                   int64_t expected_end, const char* tokens_name) {
  h5::Id ds = open_dataset(file, path, name);
  const DatasetShape shape = inspect_dataset(ds.get(), path, name);
  LN_CHECK(shape.element_bytes == 8 && shape.length >= 1, "[", kWhere, "] ", path, ": /", name,
           " should hold uint64 offsets, documents + 1 of them");
  std::vector<uint64_t> offsets(static_cast<size_t>(shape.length));
  read_slice(ds.get(), H5T_NATIVE_UINT64, 0, offsets.size(), offsets.data(), path + " /" + name);
  LN_CHECK(offsets.front() == 0, "[", kWhere, "] ", path, ": /", name, " does not start at 0");
  for (size_t i = 1; i < offsets.size(); ++i) {
    LN_CHECK(offsets[i] >= offsets[i - 1], "[", kWhere, "] ", path, ": /", name,
             " decreases at document ", i - 1, " (corrupt)");
  }
  LN_CHECK(offsets.back() == static_cast<uint64_t>(expected_end), "[", kWhere, "] ", path, ": /",
           name, " ends at ", offsets.back(), " but /", tokens_name, " holds ", expected_end,
           " tokens (corrupt)");
  return offsets;
}

std::string short_hash(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) : h; }

}  // namespace

// ===================================================================================== writer

struct TokenStoreWriter::Impl {
  std::string path, tmp;
  StoreHeader header;
  hid_t disk_type = H5T_STD_U16LE;
  int token_bits = 16;
  hsize_t token_chunk = 0;
  h5::Id file, tokens, offsets, target_tokens, target_offsets;
  // Pending elements of each stream and how many were written before them.
  struct Pending {
    std::vector<uint32_t> tokens;
    std::vector<uint64_t> offsets;
    hsize_t tokens_written = 0, offsets_written = 0;
    uint64_t next_offset = 0;  // tokens so far, written or pending
  } main, target;
  Sha256 sha;
  bool committed = false;
  int64_t documents = 0;

  // Closes what is open and, unless committed, removes the temporary file.
  ~Impl() {
    {
      h5::Lock lock;
      target_offsets.reset();
      target_tokens.reset();
      offsets.reset();
      tokens.reset();
      file.reset();
    }
    if (!committed && !tmp.empty()) std::remove(tmp.c_str());
  }

  void check_tokens(std::span<const int32_t> ids) const {
    for (int32_t id : ids) {
      LN_CHECK(id >= 0 && id < header.vocab_size, "[", kWhere, "] token id ", id,
               " is outside the vocabulary [0, ", header.vocab_size, ")");
    }
  }

  void push(Pending& p, std::span<const int32_t> ids) {
    p.tokens.insert(p.tokens.end(), ids.begin(), ids.end());
    p.tokens.push_back(static_cast<uint32_t>(header.eos_id));
    p.next_offset += ids.size() + 1;
    p.offsets.push_back(p.next_offset);
  }

  // Writes whole chunks (all that is pending when `final`).
  void flush(Pending& p, hid_t tokens_ds, hid_t offsets_ds, bool hash, bool final) {
    const size_t n_tok = final ? p.tokens.size() : p.tokens.size() / token_chunk * token_chunk;
    if (n_tok > 0) {
      if (token_bits == 16) {
        std::vector<uint16_t> narrow(p.tokens.begin(), p.tokens.begin() + n_tok);
        if (hash) sha.update(narrow.data(), narrow.size() * 2);
        append(tokens_ds, H5T_NATIVE_UINT16, p.tokens_written, n_tok, narrow.data(), path);
      } else {
        if (hash) sha.update(p.tokens.data(), n_tok * 4);
        append(tokens_ds, H5T_NATIVE_UINT32, p.tokens_written, n_tok, p.tokens.data(), path);
      }
      p.tokens_written += n_tok;
      p.tokens.erase(p.tokens.begin(), p.tokens.begin() + n_tok);
    }
    const size_t n_off = final ? p.offsets.size() : p.offsets.size() / kOffsetChunk * kOffsetChunk;
    if (n_off > 0) {
      append(offsets_ds, H5T_NATIVE_UINT64, p.offsets_written, n_off, p.offsets.data(), path);
      p.offsets_written += n_off;
      p.offsets.erase(p.offsets.begin(), p.offsets.begin() + n_off);
    }
  }

  void flush_all(bool final) {
    flush(main, tokens.get(), offsets.get(), true, final);
    if (target_tokens.valid()) flush(target, target_tokens.get(), target_offsets.get(), false, final);
  }
};

TokenStoreWriter::TokenStoreWriter(std::string path, StoreHeader header) : impl_(std::make_unique<Impl>()) {
  Impl& w = *impl_;
  LN_CHECK(header.task == "lm" || header.task == "doc2text", "[", kWhere, "] unknown task '",
           header.task, "' (expected lm or doc2text)");
  LN_CHECK(header.vocab_size > 0 && header.vocab_size <= (int64_t{1} << 32), "[", kWhere,
           "] vocabulary size ", header.vocab_size, " is outside [1, 2^32]");
  LN_CHECK(header.eos_id >= 0 && header.eos_id < header.vocab_size, "[", kWhere, "] EOS id ",
           header.eos_id, " is outside the vocabulary");
  w.path = std::move(path);
  w.tmp = w.path + ".tmp-" + std::to_string(::getpid());
  w.header = std::move(header);
  w.token_bits = w.header.vocab_size <= 65536 ? 16 : 32;
  w.disk_type = w.token_bits == 16 ? H5T_STD_U16LE : H5T_STD_U32LE;
  w.token_chunk = kChunkBytes / (w.token_bits / 8);
  // Offsets start with the 0 in front of the first document.
  w.main.offsets.push_back(0);
  w.target.offsets.push_back(0);

  h5::Lock lock;
  w.file = h5::check_id(H5Fcreate(w.tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), kWhere,
                        "cannot create " + w.tmp);
  w.tokens = create_extendible(w.file.get(), "tokens", w.disk_type, w.token_chunk);
  w.offsets = create_extendible(w.file.get(), "doc_offsets", H5T_STD_U64LE, kOffsetChunk);
  if (w.header.task == "doc2text") {
    w.target_tokens = create_extendible(w.file.get(), "target_tokens", w.disk_type, w.token_chunk);
    w.target_offsets = create_extendible(w.file.get(), "target_offsets", H5T_STD_U64LE, kOffsetChunk);
  }
}

TokenStoreWriter::~TokenStoreWriter() = default;

void TokenStoreWriter::add_document(std::span<const int32_t> tokens) {
  Impl& w = *impl_;
  LN_CHECK(w.header.task == "lm", "[", kWhere, "] add_document on a ", w.header.task,
           " store (use add_pair)");
  w.check_tokens(tokens);
  w.push(w.main, tokens);
  ++w.documents;
  h5::Lock lock;
  w.flush_all(false);
}

void TokenStoreWriter::add_pair(std::span<const int32_t> source, std::span<const int32_t> target) {
  Impl& w = *impl_;
  LN_CHECK(w.header.task == "doc2text", "[", kWhere, "] add_pair on a ", w.header.task,
           " store (use add_document)");
  w.check_tokens(source);
  w.check_tokens(target);
  w.push(w.main, source);
  w.push(w.target, target);
  ++w.documents;
  h5::Lock lock;
  w.flush_all(false);
}

int64_t TokenStoreWriter::num_documents() const { return impl_->documents; }
int64_t TokenStoreWriter::num_tokens() const { return static_cast<int64_t>(impl_->main.next_offset); }

void TokenStoreWriter::commit() {
  Impl& w = *impl_;
  LN_CHECK(!w.committed, "[", kWhere, "] ", w.path, " was already committed");
  {
    h5::Lock lock;
    w.flush_all(true);
    const hid_t root = w.file.get();
    write_int_attribute(root, "format_version", kStoreFormatVersion);
    write_int_attribute(root, "vocab_size", w.header.vocab_size);
    write_int_attribute(root, "eos_id", w.header.eos_id);
    write_int_attribute(root, "bos_id", SpecialIds::bos);
    write_int_attribute(root, "pad_id", SpecialIds::pad);
    write_int_attribute(root, "unk_id", SpecialIds::unk);
    write_string_attribute(root, "tokenizer_sha256", w.header.tokenizer_hash);
    write_string_attribute(root, "task", w.header.task);
    write_string_attribute(root, "split", w.header.split);
    write_string_attribute(root, "source", w.header.source);
    write_int_attribute(root, "num_documents", w.documents);
    write_int_attribute(root, "num_tokens", static_cast<int64_t>(w.main.next_offset));
    write_string_attribute(root, "tokens_sha256", w.sha.hex_digest());
    h5::check(H5Fflush(root, H5F_SCOPE_GLOBAL), kWhere, "flushing " + w.tmp);
    w.target_offsets.reset();
    w.target_tokens.reset();
    w.offsets.reset();
    w.tokens.reset();
    // Closed explicitly (not by the holder) so that a failure to write the last data is seen.
    h5::check(H5Fclose(w.file.release()), kWhere, "closing " + w.tmp);
  }
  // Data on disk before the name: a crash leaves the old file or the whole new one.
  const int fd = ::open(w.tmp.c_str(), O_RDONLY);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  LN_CHECK(synced, "[", kWhere, "] cannot sync ", w.tmp, ": ", std::strerror(errno));
  LN_CHECK(std::rename(w.tmp.c_str(), w.path.c_str()) == 0, "[", kWhere, "] cannot rename ", w.tmp,
           " to ", w.path, ": ", std::strerror(errno));
  w.committed = true;
  const std::string dir = fs::path(w.path).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// ===================================================================================== reader

struct TokenStore::Handles {
  h5::Id file, tokens, target_tokens;
};

TokenStore::~TokenStore() {
  h5::Lock lock;
  handles_.reset();
}

bool is_hdf5_file(const std::string& path) {
  h5::Lock lock;
#if H5_VERSION_GE(1, 12, 0)
  const htri_t r = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t r = H5Fis_hdf5(path.c_str());
#endif
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

std::shared_ptr<TokenStore> TokenStore::open(const std::string& path, StoreOpenOptions options) {
  {
    std::ifstream probe(path, std::ios::binary);
    LN_CHECK(probe.good(), "[", kWhere, "] cannot read ", path, ": ", std::strerror(errno));
  }
  LN_CHECK(is_hdf5_file(path), "[", kWhere, "] ", path,
           " is not an HDF5 file (no HDF5 signature: another kind of file, or its start is damaged)");
  std::shared_ptr<TokenStore> store(new TokenStore());
  store->handles_ = std::make_unique<Handles>();
  StoreInfo& info = store->info_;
  info.path = path;
  info.file_bytes = fs::file_size(path);

  h5::Lock lock;
  Handles& h = *store->handles_;
  h.file = h5::check_id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), kWhere,
                        "cannot open " + path + ": the file is truncated or corrupt");
  const hid_t root = h.file.get();
  info.format_version = static_cast<int32_t>(read_int_attribute(root, path, "format_version"));
  LN_CHECK(info.format_version >= 1 && info.format_version <= kStoreFormatVersion, "[", kWhere, "] ",
           path, " has format version ", info.format_version, "; this program reads versions 1 to ",
           kStoreFormatVersion);
  StoreHeader& hd = info.header;
  hd.vocab_size = read_int_attribute(root, path, "vocab_size");
  hd.eos_id = static_cast<int32_t>(read_int_attribute(root, path, "eos_id"));
  hd.tokenizer_hash = read_string_attribute(root, path, "tokenizer_sha256");
  hd.task = read_string_attribute(root, path, "task");
  hd.split = read_string_attribute(root, path, "split");
  hd.source = read_string_attribute(root, path, "source");
  info.tokens_sha256 = read_string_attribute(root, path, "tokens_sha256");
  LN_CHECK(hd.task == "lm" || hd.task == "doc2text", "[", kWhere, "] ", path, " has unknown task '",
           hd.task, "'");
  LN_CHECK(hd.vocab_size > 0 && hd.eos_id >= 0 && hd.eos_id < hd.vocab_size, "[", kWhere, "] ", path,
           ": EOS id ", hd.eos_id, " is outside the vocabulary of ", hd.vocab_size);

  h.tokens = open_dataset(root, path, "tokens");
  const DatasetShape tokens = inspect_dataset(h.tokens.get(), path, "tokens");
  LN_CHECK(tokens.element_bytes == 2 || tokens.element_bytes == 4, "[", kWhere, "] ", path,
           ": /tokens should be uint16 or uint32");
  info.token_bits = static_cast<int>(tokens.element_bytes * 8);
  LN_CHECK(info.token_bits == 32 || hd.vocab_size <= 65536, "[", kWhere, "] ", path,
           ": uint16 tokens cannot hold a vocabulary of ", hd.vocab_size);
  info.num_tokens = tokens.length;
  store->offsets_ = read_offsets(root, path, "doc_offsets", tokens.length, "tokens");
  info.num_documents = static_cast<int64_t>(store->offsets_.size()) - 1;
  LN_CHECK(read_int_attribute(root, path, "num_documents") == info.num_documents &&
               read_int_attribute(root, path, "num_tokens") == info.num_tokens,
           "[", kWhere, "] ", path, ": the recorded document and token counts do not match the data");
  if (hd.task == "doc2text") {
    h.target_tokens = open_dataset(root, path, "target_tokens");
    const DatasetShape targets = inspect_dataset(h.target_tokens.get(), path, "target_tokens");
    LN_CHECK(targets.element_bytes == tokens.element_bytes, "[", kWhere, "] ", path,
             ": /target_tokens and /tokens have different types");
    info.num_target_tokens = targets.length;
    store->target_offsets_ = read_offsets(root, path, "target_offsets", targets.length, "target_tokens");
    LN_CHECK(store->target_offsets_.size() == store->offsets_.size(), "[", kWhere, "] ", path,
             ": /target_offsets and /doc_offsets count different documents");
  }
  if (static_cast<uint64_t>(info.num_tokens) * tokens.element_bytes <= options.preload_max_bytes) {
    store->preloaded_.resize(static_cast<size_t>(info.num_tokens));
    read_slice(h.tokens.get(), H5T_NATIVE_UINT32, 0, store->preloaded_.size(), store->preloaded_.data(),
               path + " /tokens");
    store->is_preloaded_ = true;
  }
  return store;
}

int64_t TokenStore::document_length(int64_t i) const {
  LN_CHECK(i >= 0 && i < num_documents(), "[", kWhere, "] document ", i, " of ", num_documents());
  return static_cast<int64_t>(offsets_[i + 1] - offsets_[i]);
}

void TokenStore::read(int64_t start, int64_t count, int64_t* out) const {
  LN_CHECK(start >= 0 && count >= 0 && start + count <= num_tokens(), "[", kWhere, "] tokens [",
           start, ", ", start + count, ") outside a store of ", num_tokens(), " tokens");
  if (is_preloaded_) {
    std::copy_n(preloaded_.begin() + start, count, out);
    return;
  }
  // Read in the stored width and widen here: HDF5's own conversion to int64 is several times
  // slower than the read.
  thread_local std::vector<uint32_t> wide;
  thread_local std::vector<uint16_t> narrow;
  h5::Lock lock;
  if (info_.token_bits == 16) {
    narrow.resize(static_cast<size_t>(count));
    read_slice(handles_->tokens.get(), H5T_NATIVE_UINT16, start, count, narrow.data(), info_.path + " /tokens");
    std::copy(narrow.begin(), narrow.end(), out);
  } else {
    wide.resize(static_cast<size_t>(count));
    read_slice(handles_->tokens.get(), H5T_NATIVE_UINT32, start, count, wide.data(), info_.path + " /tokens");
    std::copy(wide.begin(), wide.end(), out);
  }
}

std::vector<int32_t> TokenStore::document(int64_t i) const {
  const int64_t n = document_length(i);
  std::vector<int64_t> wide(static_cast<size_t>(n));
  read(static_cast<int64_t>(offsets_[i]), n, wide.data());
  return std::vector<int32_t>(wide.begin(), wide.end());
}

std::vector<int32_t> TokenStore::target(int64_t i) const {
  LN_CHECK(info_.header.task == "doc2text", "[", kWhere, "] ", info_.path,
           " is a language-model store without targets");
  LN_CHECK(i >= 0 && i < num_documents(), "[", kWhere, "] document ", i, " of ", num_documents());
  const uint64_t start = target_offsets_[i], n = target_offsets_[i + 1] - start;
  std::vector<int32_t> out(n);
  h5::Lock lock;
  read_slice(handles_->target_tokens.get(), H5T_NATIVE_INT32, start, n, out.data(),
             info_.path + " /target_tokens");
  return out;
}

void TokenStore::require_tokenizer(const Tokenizer& tokenizer) const {
  const StoreHeader& h = info_.header;
  LN_CHECK(h.tokenizer_hash == tokenizer.hash(), "[", kWhere, "] ", info_.path,
           " was tokenised with another tokenizer (sha256 ", short_hash(h.tokenizer_hash),
           "...) than this run's ", tokenizer.name(), " (sha256 ", short_hash(tokenizer.hash()),
           "...): run `longnet prepare` again with this tokenizer, or use the one that made the store");
  LN_CHECK(h.vocab_size == tokenizer.vocab_size(), "[", kWhere, "] ", info_.path, " has vocabulary size ",
           h.vocab_size, " but ", tokenizer.name(), " has ", tokenizer.vocab_size());
}

std::string TokenStore::verify() const {
  constexpr int64_t kBlock = int64_t{1} << 20;
  Sha256 sha;
  std::vector<int64_t> block;
  const int64_t vocab = info_.header.vocab_size;
  for (int64_t start = 0; start < num_tokens(); start += kBlock) {
    const int64_t n = std::min(kBlock, num_tokens() - start);
    block.resize(static_cast<size_t>(n));
    read(start, n, block.data());
    for (int64_t i = 0; i < n; ++i) {
      LN_CHECK(block[i] < vocab, "[", kWhere, "] ", info_.path, ": token ", start + i, " has id ",
               block[i], ", outside the vocabulary of ", vocab, " (corrupt)");
    }
    if (info_.token_bits == 16) {
      std::vector<uint16_t> narrow(block.begin(), block.end());
      sha.update(narrow.data(), narrow.size() * 2);
    } else {
      std::vector<uint32_t> narrow(block.begin(), block.end());
      sha.update(narrow.data(), narrow.size() * 4);
    }
  }
  const std::string digest = sha.hex_digest();
  LN_CHECK(digest == info_.tokens_sha256, "[", kWhere, "] ", info_.path,
           ": the tokens do not match their checksum (stored ", short_hash(info_.tokens_sha256),
           "..., computed ", short_hash(digest), "...): the file is corrupt");
  return "verified " + std::to_string(num_tokens()) + " tokens: checksum matches, all ids below " +
         std::to_string(vocab);
}

std::string TokenStore::summary() const {
  const StoreHeader& h = info_.header;
  std::vector<int64_t> lengths(static_cast<size_t>(num_documents()));
  for (int64_t i = 0; i < num_documents(); ++i) lengths[i] = document_length(i);
  std::sort(lengths.begin(), lengths.end());
  std::ostringstream s;
  s << "token store " << info_.path << " (" << info_.file_bytes << " bytes)\n"
    << "  format          version " << info_.format_version << ", task " << h.task << ", split "
    << h.split << "\n"
    << "  tokens          " << num_tokens() << " (uint" << info_.token_bits << ")\n"
    << "  documents       " << num_documents() << "\n";
  if (!lengths.empty()) {
    const double mean = static_cast<double>(num_tokens()) / static_cast<double>(lengths.size());
    s << "  doc length      min " << lengths.front() << ", median " << lengths[lengths.size() / 2]
      << ", mean " << std::fixed << std::setprecision(1) << mean << ", max " << lengths.back()
      << " tokens (EOS included)\n";
  }
  if (h.task == "doc2text") s << "  target tokens   " << info_.num_target_tokens << "\n";
  s << "  vocabulary      " << h.vocab_size << " (eos " << h.eos_id << ")\n"
    << "  tokenizer       sha256 " << h.tokenizer_hash << "\n"
    << "  tokens sha256   " << info_.tokens_sha256 << "\n"
    << "  source          " << h.source << "\n";
  return s.str();
}

}  // namespace longnet::data
