#include "data/tokenizer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "data/sha256.h"
#include "data/special_ids.h"
#include "framework/core/error.h"

namespace longnet::data {
namespace {

// --- A minimal reader of the protobuf wire format, enough to read the few spec fields that the
// processor does not expose (model type, normaliser). Field numbers are those of
// sentencepiece_model.proto, unchanged since the format was published.

struct WireField {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t varint = 0;          // wire type 0
  std::string_view bytes;       // wire type 2
};

bool read_varint(std::string_view& in, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const auto b = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    value |= uint64_t{b & 0x7Fu} << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Reads the next field; false at the end or on malformed input.
bool read_field(std::string_view& in, WireField& f) {
  uint64_t key;
  if (in.empty() || !read_varint(in, key)) return false;
  f.number = static_cast<uint32_t>(key >> 3);
  f.wire_type = static_cast<uint32_t>(key & 7);
  switch (f.wire_type) {
    case 0: return read_varint(in, f.varint);
    case 1:
    case 5: {
      const size_t n = f.wire_type == 1 ? 8 : 4;
      if (in.size() < n) return false;
      in.remove_prefix(n);
      return true;
    }
    case 2: {
      uint64_t len;
      if (!read_varint(in, len) || len > in.size()) return false;
      f.bytes = in.substr(0, len);
      in.remove_prefix(len);
      return true;
    }
    default: return false;
  }
}

// Calls fn(field) for each field of a message.
template <class Fn>
void for_each_field(std::string_view message, Fn&& fn) {
  WireField f;
  while (read_field(message, f)) fn(f);
}

TokenizerSpec read_spec(std::string_view model) {
  // ModelProto: trainer_spec = 2, normalizer_spec = 3. TrainerSpec: model_type = 3.
  // NormalizerSpec: name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4.
  TokenizerSpec spec{"unigram", "", true, true};
  for_each_field(model, [&](const WireField& f) {
    if (f.number == 2 && f.wire_type == 2) {
      for_each_field(f.bytes, [&](const WireField& t) {
        if (t.number == 3 && t.wire_type == 0) {
          static const char* kTypes[] = {"?", "unigram", "bpe", "word", "char"};
          spec.model_type = t.varint <= 4 ? kTypes[t.varint] : "?";
        }
      });
    } else if (f.number == 3 && f.wire_type == 2) {
      for_each_field(f.bytes, [&](const WireField& n) {
        if (n.number == 1 && n.wire_type == 2) spec.normalization = std::string(n.bytes);
        if (n.number == 3 && n.wire_type == 0) spec.add_dummy_prefix = n.varint != 0;
        if (n.number == 4 && n.wire_type == 0) spec.remove_extra_whitespaces = n.varint != 0;
      });
    }
  });
  return spec;
}

// Feeds training pieces to SentencePiece: documents are read lazily and cut at line ends, so a
// long document is learnt from rather than dropped for exceeding the sentence limit.
class PieceIterator final : public sentencepiece::SentenceIterator {
 public:
  PieceIterator(CorpusReader& corpus, size_t max_bytes) : corpus_(corpus), max_bytes_(max_bytes) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return pieces_[index_]; }
  sentencepiece::util::Status status() const override {
    if (!error_) return {};
    return {sentencepiece::util::StatusCode::kAborted, "reading the corpus failed"};
  }
  int64_t count() const { return count_; }
  /// Rethrows a corpus error caught while SentencePiece was iterating.
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Corpus errors are held rather than thrown through SentencePiece's frames.
  void advance() {
    try {
      step();
    } catch (...) {
      error_ = std::current_exception();
      done_ = true;
    }
  }
  void step() {
    if (!pieces_.empty() && ++index_ < pieces_.size()) {
      ++count_;
      return;
    }
    pieces_.clear();
    index_ = 0;
    Document doc;
    while (pieces_.empty()) {
      if (!corpus_.next(doc)) {
        done_ = true;
        return;
      }
      pieces_ = split_for_training(doc.text, max_bytes_);
    }
    ++count_;
  }

  CorpusReader& corpus_;
  size_t max_bytes_;
  std::vector<std::string> pieces_;
  size_t index_ = 0;
  bool done_ = false;
  int64_t count_ = 0;
  std::exception_ptr error_;
};

// SentencePiece states an unsupportable vocabulary size in its own words; say what to change.
std::string explain_training_error(const std::string& message, const TokenizerTrainOptions& o) {
  const std::string prefix = "[tokenizer] training failed: ";
  if (message.find("Vocabulary size too high") != std::string::npos) {
    const size_t at = message.find("<= ");
    const std::string limit =
        at == std::string::npos ? "" : message.substr(at + 3, message.find('.', at) - at - 3);
    return "[tokenizer] vocabulary size " + std::to_string(o.vocab_size) +
           " is larger than the corpus supports for a " + o.model_type + " model" +
           (limit.empty() ? "" : " (at most " + limit + ")") +
           ": lower --vocab-size or add text";
  }
  if (message.find("smaller than required_chars") != std::string::npos) {
    return "[tokenizer] vocabulary size " + std::to_string(o.vocab_size) +
           " cannot hold the special ids, the 256 byte pieces and the corpus's characters (" +
           message.substr(message.rfind(']') + 2) + "): raise --vocab-size";
  }
  return prefix + message;
}

// SentencePiece's trainer keeps process-wide settings (log level, random seed).
std::mutex& training_mutex() {
  static std::mutex mu;
  return mu;
}

// True when no piece holds the whitespace marker except as its first character or as a run of
// markers only. No piece then spans a point where a space follows another character, so text cut
// there encodes to the same ids piece by piece as whole.
bool pieces_split_at_spaces(const sentencepiece::SentencePieceProcessor& sp) {
  static const std::string kMarker = "\xE2\x96\x81";  // U+2581
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    const std::string& piece = sp.IdToPiece(id);
    const size_t inner = piece.find(kMarker, 1);
    if (inner == std::string::npos) continue;
    for (size_t at = 0; at < piece.size(); at += kMarker.size()) {
      if (piece.compare(at, kMarker.size(), kMarker) != 0) return false;
    }
  }
  return true;
}

// SentencePiece's BPE encoder slows down with the length of its input (a heap over all symbol
// pairs): long texts are encoded in pieces of about this size.
constexpr size_t kEncodeChunk = 4096;

// Where to end the next piece of `text`: before the first space that follows a non-space after
// kEncodeChunk bytes, or the end.
size_t next_cut(std::string_view text) {
  for (size_t i = kEncodeChunk; i < text.size(); ++i) {
    if (text[i] == ' ' && text[i - 1] != ' ') return i;
  }
  return text.size();
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
  return from_bytes(read_file(path, "tokenizer"), path);
}

Tokenizer Tokenizer::from_bytes(std::string bytes, std::string name) {
  auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->LoadFromSerializedProto(bytes);
  LN_CHECK(status.ok(), "[tokenizer] ", name, " is not a SentencePiece model (",
           status.ToString(), ")");
  const struct {
    const char* what;
    int got, want;
  } ids[] = {{"pad", sp->pad_id(), SpecialIds::pad},
             {"unk", sp->unk_id(), SpecialIds::unk},
             {"bos", sp->bos_id(), SpecialIds::bos},
             {"eos", sp->eos_id(), SpecialIds::eos}};
  for (const auto& id : ids) {
    LN_CHECK(id.got == id.want, "[tokenizer] ", name, " has ", id.what, " id ", id.got,
             " but this program uses ", id.want,
             " (pad 0, unk 1, bos 2, eos 3): train the model with `longnet tokenizer train`");
  }
  Tokenizer t;
  t.spec_ = read_spec(bytes);
  // BPE only: unigram's Viterbi search breaks ties between equally good segmentations through
  // rounding of the running path score, which depends on where the text starts.
  t.split_safe_ = t.spec_.model_type == "bpe" && t.spec_.normalization == "identity" &&
                  !t.spec_.add_dummy_prefix && !t.spec_.remove_extra_whitespaces &&
                  pieces_split_at_spaces(*sp);
  t.hash_ = sha256_hex(bytes);
  t.bytes_ = std::move(bytes);
  t.name_ = std::move(name);
  t.sp_ = std::move(sp);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  std::vector<int> ids;
  while (!text.empty()) {
    const size_t cut = split_safe_ ? next_cut(text) : text.size();
    const auto status = sp_->Encode(text.substr(0, cut), &ids);
    LN_CHECK(status.ok(), "[tokenizer] encode failed: ", status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
    text.remove_prefix(cut);
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const int32_t n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    LN_CHECK(ids[i] >= 0 && ids[i] < n, "[tokenizer] id ", ids[i], " at position ", i,
             " is outside the vocabulary [0, ", n, ")");
  }
  std::string text;
  const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  LN_CHECK(status.ok(), "[tokenizer] decode failed: ", status.ToString());
  return text;
}

std::string Tokenizer::piece(int32_t id) const {
  LN_CHECK(id >= 0 && id < vocab_size(), "[tokenizer] id ", id, " is outside the vocabulary [0, ",
           vocab_size(), ")");
  return sp_->IdToPiece(id);
}

int32_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

bool Tokenizer::byte_fallback() const {
  // Byte pieces exist only in models trained with byte fallback; they follow the special ids.
  return vocab_size() > SpecialIds::eos + 1 && sp_->IsByte(SpecialIds::eos + 1);
}

std::string train_tokenizer(CorpusReader& corpus, const TokenizerTrainOptions& o,
                            TokenizerTrainReport* report) {
  LN_CHECK(o.model_type == "bpe" || o.model_type == "unigram", "[tokenizer] unknown model type '",
           o.model_type, "' (expected bpe or unigram)");
  const int32_t reserved = 4 + (o.byte_fallback ? 256 : 0);
  LN_CHECK(o.vocab_size > reserved, "[tokenizer] vocabulary size ", o.vocab_size,
           " leaves no room beyond the 4 special ids", o.byte_fallback ? " and 256 byte pieces" : "",
           ": use more than ", reserved);
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Sentences longer than max_sentence_length are dropped by SentencePiece; our pieces stay below.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"byte_fallback", o.byte_fallback ? "true" : "false"},
      {"character_coverage", std::to_string(o.character_coverage)},
      // Text comes back exactly as it went in: no Unicode normalisation, whitespace kept.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      // No space is invented in front of a text, so encodings of adjacent pieces concatenate.
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      // Digits one by one: numbers (passkeys) tokenise the same way wherever they occur.
      {"split_digits", "true"},
      {"pad_id", std::to_string(SpecialIds::pad)},
      {"unk_id", std::to_string(SpecialIds::unk)},
      {"bos_id", std::to_string(SpecialIds::bos)},
      {"eos_id", std::to_string(SpecialIds::eos)},
      {"max_sentence_length", std::to_string(o.max_piece_bytes + 1)},
      {"input_sentence_size", std::to_string(o.max_pieces)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", o.verbose ? "0" : "2"},
  };
  std::lock_guard<std::mutex> lock(training_mutex());
  sentencepiece::SetRandomGeneratorSeed(o.seed);
  PieceIterator pieces(corpus, o.max_piece_bytes);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &pieces, &model);
  pieces.rethrow();
  corpus.require_documents();
  LN_CHECK(status.ok(), explain_training_error(status.ToString(), o));
  if (report) {
    report->corpus = corpus.stats();
    report->pieces = pieces.count();
  }
  return model;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  // The folder is made as asked for (`-o runs/x/tokenizer.model` in a new run directory).
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  LN_CHECK(!ec, "[write] cannot create the folder ", parent.string(), ": ", ec.message());
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  LN_CHECK(fd >= 0, "[write] cannot create ", tmp, ": ", std::strerror(errno));
  size_t done = 0;
  bool ok = true;
  while (ok && done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  const int saved = errno;
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = ok ? errno : saved;
    std::remove(tmp.c_str());
    LN_FAIL("[write] cannot write ", path, ": ", std::strerror(err));
  }
}

std::string tokenizer_summary(const Tokenizer& t, int sample_pieces) {
  std::ostringstream s;
  s << "SentencePiece model " << t.name() << "\n"
    << "  sha256          " << t.hash() << "\n"
    << "  type            " << t.spec().model_type << "\n"
    << "  vocabulary      " << t.vocab_size() << " pieces\n"
    << "  byte fallback   " << (t.byte_fallback() ? "yes" : "no") << "\n"
    << "  normalisation   " << (t.spec().normalization.empty() ? "(none)" : t.spec().normalization)
    << (t.spec().remove_extra_whitespaces ? ", extra whitespace removed" : ", whitespace kept")
    << (t.spec().add_dummy_prefix ? ", space added in front" : "") << "\n"
    << "  special ids     pad " << SpecialIds::pad << ", unk " << SpecialIds::unk << ", bos "
    << SpecialIds::bos << ", eos " << SpecialIds::eos << "\n";
  const int32_t first = SpecialIds::eos + 1 + (t.byte_fallback() ? 256 : 0);
  if (sample_pieces > 0 && first < t.vocab_size()) {
    s << "  pieces from " << first << ":";
    for (int32_t id = first; id < std::min(t.vocab_size(), first + sample_pieces); ++id) {
      s << " ";
      for (char c : t.piece(id)) {  // keep the list on one line
        if (c == '\n') s << "\\n";
        else if (c == '\t') s << "\\t";
        else if (c == '\r') s << "\\r";
        else s << c;
      }
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace longnet::data
