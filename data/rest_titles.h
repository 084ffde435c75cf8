#pragma once
// Section titles of reStructuredText documents, for the document-to-text task (a document's body
// -> its titles). A title is a line of text underlined, or over- and underlined, by one repeated
// punctuation character at least as long as the title.
#include <string>
#include <vector>

namespace longnet::data {

/// A document split into its section titles and everything else.
struct TitledText {
  std::string body;                 // the document without title and adornment lines
  std::vector<std::string> titles;  // in document order, surrounding whitespace removed
};

/// Finds the section titles of a reST document. Text lines that are indented, or not preceded
/// by a blank line, are not titles (reST requires both), which keeps literal blocks and table
/// borders out.
TitledText split_rest_titles(const std::string& text);

}  // namespace longnet::data
