// The tables an SQL statement from a QUERY event touches. The binary log carries DDL (and, in
// STATEMENT format, DML) as text; a tokenizer that knows identifiers, quoting and comments is
// enough to find the target after the leading keywords. Statements it does not know yield nothing.
#include <algorithm>
#include <cctype>

#include "ktricks/mysqlwatch.hpp"

namespace ktricks::mysqlwatch {
namespace {

struct Token {
    std::string text;     // identifier (unquoted) or the punctuation character
    bool quoted = false;  // `...`: never a keyword
    bool word = false;
};

bool is_word_byte(unsigned char c) { return std::isalnum(c) || c == '_' || c == '$' || c >= 0x80; }

std::vector<Token> tokenize(std::string_view sql, std::size_t limit = 64) {
    std::vector<Token> tokens;
    std::size_t i = 0;
    while (i < sql.size() && tokens.size() < limit) {
        unsigned char c = static_cast<unsigned char>(sql[i]);
        if (std::isspace(c)) {
            ++i;
        } else if (sql.substr(i, 2) == "/*") {
            auto end = sql.find("*/", i + 2);
            i = end == std::string_view::npos ? sql.size() : end + 2;
        } else if (c == '#' ||
                   (sql.substr(i, 2) == "--" &&
                    (i + 2 >= sql.size() || std::isspace(static_cast<unsigned char>(sql[i + 2]))))) {
            auto end = sql.find('\n', i);
            i = end == std::string_view::npos ? sql.size() : end + 1;
        } else if (c == '`' || c == '"') {
            Token token;
            token.quoted = token.word = true;
            char quote = static_cast<char>(c);
            for (++i; i < sql.size(); ++i) {
                if (sql[i] == quote) {
                    if (i + 1 < sql.size() && sql[i + 1] == quote) {
                        token.text += quote;
                        ++i;
                        continue;
                    }
                    ++i;
                    break;
                }
                token.text += sql[i];
            }
            tokens.push_back(std::move(token));
        } else if (is_word_byte(c)) {
            Token token;
            token.word = true;
            while (i < sql.size() && is_word_byte(static_cast<unsigned char>(sql[i]))) token.text += sql[i++];
            tokens.push_back(std::move(token));
        } else {
            tokens.push_back(Token{std::string(1, static_cast<char>(c)), false, false});
            ++i;
        }
    }
    return tokens;
}

class Cursor {
public:
    explicit Cursor(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}
    bool keyword(std::string_view word) {
        if (at_end() || !tokens_[at_].word || tokens_[at_].quoted) return false;
        const std::string& text = tokens_[at_].text;
        if (text.size() != word.size()) return false;
        for (std::size_t k = 0; k < text.size(); ++k)
            if (std::toupper(static_cast<unsigned char>(text[k])) != word[k]) return false;
        ++at_;
        return true;
    }
    bool punct(char c) {
        if (at_end() || tokens_[at_].word || tokens_[at_].text[0] != c) return false;
        ++at_;
        return true;
    }
    void skip_keywords(std::initializer_list<std::string_view> words) {
        for (bool again = true; again;) {
            again = false;
            for (auto word : words) again = again || keyword(word);
        }
    }
    // [db.]name; db defaults to `default_db`.
    std::optional<std::pair<std::string, std::string>> qualified_name(std::string_view default_db) {
        if (at_end() || !tokens_[at_].word) return std::nullopt;
        std::string first = tokens_[at_++].text;
        if (punct('.')) {
            if (at_end() || !tokens_[at_].word) return std::nullopt;
            return std::make_pair(first, tokens_[at_++].text);
        }
        return std::make_pair(std::string(default_db), first);
    }
    bool at_end() const { return at_ >= tokens_.size(); }

private:
    std::vector<Token> tokens_;
    std::size_t at_ = 0;
};

Change make(std::string event, std::pair<std::string, std::string> name) {
    Change change;
    change.event = std::move(event);
    change.db = std::move(name.first);
    change.table = std::move(name.second);
    change.via = Via::binlog;
    return change;
}

}  // namespace

std::vector<Change> changes_from_statement(std::string_view sql, std::string_view default_db) {
    Cursor cursor(tokenize(sql));
    std::vector<Change> changes;
    auto one = [&](std::string event) {
        if (auto name = cursor.qualified_name(default_db))
            changes.push_back(make(std::move(event), std::move(*name)));
    };
    if (cursor.keyword("CREATE")) {
        cursor.skip_keywords({"OR", "REPLACE", "TEMPORARY"});
        if (cursor.keyword("TABLE")) {
            cursor.skip_keywords({"IF", "NOT", "EXISTS"});
            one("create");
        } else if (cursor.keyword("DATABASE") || cursor.keyword("SCHEMA")) {
            cursor.skip_keywords({"IF", "NOT", "EXISTS"});
            if (auto name = cursor.qualified_name("")) changes.push_back(make("create", {name->second, ""}));
        }
    } else if (cursor.keyword("DROP")) {
        cursor.skip_keywords({"TEMPORARY"});
        if (cursor.keyword("TABLE")) {
            cursor.skip_keywords({"IF", "EXISTS"});
            do one("drop");
            while (cursor.punct(','));
        } else if (cursor.keyword("DATABASE") || cursor.keyword("SCHEMA")) {
            cursor.skip_keywords({"IF", "EXISTS"});
            if (auto name = cursor.qualified_name("")) changes.push_back(make("drop", {name->second, ""}));
        }
    } else if (cursor.keyword("RENAME")) {
        if (cursor.keyword("TABLE")) {
            do {
                auto from = cursor.qualified_name(default_db);
                if (!from || !cursor.keyword("TO")) break;
                auto to = cursor.qualified_name(default_db);
                if (!to) break;
                Change change = make("rename", std::move(*from));
                change.new_table = to->second;
                if (to->first != change.db) change.new_db = to->first;
                changes.push_back(std::move(change));
            } while (cursor.punct(','));
        }
    } else if (cursor.keyword("TRUNCATE")) {
        cursor.skip_keywords({"TABLE"});
        one("truncate");
    } else if (cursor.keyword("ALTER")) {
        cursor.skip_keywords({"ONLINE", "IGNORE"});
        if (cursor.keyword("TABLE")) one("change");
    } else if (cursor.keyword("INSERT") || cursor.keyword("REPLACE")) {
        cursor.skip_keywords({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"});
        one("change");
    } else if (cursor.keyword("UPDATE")) {
        cursor.skip_keywords({"LOW_PRIORITY", "IGNORE"});
        one("change");
    } else if (cursor.keyword("DELETE")) {
        cursor.skip_keywords({"LOW_PRIORITY", "QUICK", "IGNORE", "FROM"});
        one("change");
    }
    std::erase_if(changes, [](const Change& change) { return change.db.empty() && change.table.empty(); });
    return changes;
}

}  // namespace ktricks::mysqlwatch
