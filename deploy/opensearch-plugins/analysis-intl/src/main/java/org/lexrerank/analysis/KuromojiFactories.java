package org.lexrerank.analysis;

import java.io.IOException;
import java.io.Reader;
import java.io.StringReader;
import java.io.UncheckedIOException;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.StopFilter;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.ja.JapaneseAnalyzer;
import org.apache.lucene.analysis.ja.JapaneseBaseFormFilter;
import org.apache.lucene.analysis.ja.JapaneseIterationMarkCharFilter;
import org.apache.lucene.analysis.ja.JapaneseKatakanaStemFilter;
import org.apache.lucene.analysis.ja.JapaneseNumberFilter;
import org.apache.lucene.analysis.ja.JapanesePartOfSpeechStopFilter;
import org.apache.lucene.analysis.ja.JapaneseReadingFormFilter;
import org.apache.lucene.analysis.ja.JapaneseTokenizer;
import org.apache.lucene.analysis.ja.dict.UserDictionary;
import org.apache.lucene.analysis.util.CSVUtil;
import org.apache.lucene.search.suggest.analyzing.SuggestStopFilter;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.IndexSettings;
import org.opensearch.index.analysis.AbstractCharFilterFactory;
import org.opensearch.index.analysis.AbstractIndexAnalyzerProvider;
import org.opensearch.index.analysis.AbstractTokenFilterFactory;
import org.opensearch.index.analysis.AbstractTokenizerFactory;
import org.opensearch.index.analysis.Analysis;
import org.opensearch.index.analysis.NormalizingCharFilterFactory;

/**
 * Japanese components (Lucene {@code lucene-analysis-kuromoji}, IPADIC dictionary bundled in the jar).
 * Setting names and defaults mirror the official OpenSearch {@code analysis-kuromoji} plugin.
 */
final class KuromojiFactories {

    private KuromojiFactories() {}

    /** mode = normal|search|extended; default search (splits long compounds, good for recall). */
    static JapaneseTokenizer.Mode mode(Settings settings) {
        String mode = settings.get("mode");
        return mode == null ? JapaneseTokenizer.DEFAULT_MODE : JapaneseTokenizer.Mode.valueOf(mode.toUpperCase(Locale.ROOT));
    }

    /**
     * Optional user dictionary, either a file under the config dir ({@code user_dictionary}) or inline
     * CSV rules ({@code user_dictionary_rules}); useful for legal terms IPADIC splits badly.
     * Returns null when neither is set.
     */
    static UserDictionary userDictionary(Environment env, Settings settings) {
        if (settings.hasValue("user_dictionary") && settings.hasValue("user_dictionary_rules")) {
            throw new IllegalArgumentException("It is not allowed to use [user_dictionary] in conjunction with [user_dictionary_rules]");
        }
        // Reads the file (if any) and drops '#' comment lines; null when neither setting is present.
        List<String> rules = Analysis.parseWordList(env, settings, "user_dictionary", "user_dictionary_rules", s -> s);
        if (rules == null || rules.isEmpty()) {
            return null;
        }
        // Lucene silently keeps the last of duplicate surface forms; upstream rejects them, so do we.
        Set<String> seen = new HashSet<>();
        StringBuilder csv = new StringBuilder();
        for (String rule : rules) {
            String surface = CSVUtil.parse(rule)[0];
            if (seen.add(surface) == false) {
                throw new IllegalArgumentException("Found duplicate term [" + surface + "] in user dictionary");
            }
            csv.append(rule).append('\n');
        }
        try {
            return UserDictionary.open(new StringReader(csv.toString()));
        } catch (IOException e) {
            throw new UncheckedIOException("failed to load kuromoji user dictionary", e);
        }
    }

    /** {@code kuromoji_tokenizer}: morphological analysis (settings as upstream, see README). */
    static final class KuromojiTokenizerFactory extends AbstractTokenizerFactory {
        private final UserDictionary userDictionary;
        private final JapaneseTokenizer.Mode mode;
        private final boolean discardPunctuation;
        private final boolean discardCompoundToken;
        private final String nBestExamples;
        private final int nBestCost;

        KuromojiTokenizerFactory(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, settings, name);
            this.mode = mode(settings);
            this.userDictionary = userDictionary(env, settings);
            this.discardPunctuation = settings.getAsBoolean("discard_punctuation", true);
            this.discardCompoundToken = settings.getAsBoolean("discard_compound_token", false);
            this.nBestCost = settings.getAsInt("nbest_cost", -1);
            this.nBestExamples = settings.get("nbest_examples");
        }

        @Override
        public Tokenizer create() {
            JapaneseTokenizer t = new JapaneseTokenizer(userDictionary, discardPunctuation, discardCompoundToken, mode);
            // n-best: emit alternative segmentations; cost is the max of nbest_cost and the cost
            // derived from nbest_examples ("/word1-word2/..."), exactly as upstream computes it.
            int cost = nBestCost;
            if (nBestExamples != null) {
                cost = Math.max(cost, t.calcNBestCost(nBestExamples));
            }
            t.setNBestCost(cost);
            return t;
        }
    }

    /** {@code kuromoji_baseform}: inflected verbs/adjectives -> dictionary form (解除し -> 解除する). */
    static final class BaseFormFilter extends AbstractTokenFilterFactory {
        BaseFormFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new JapaneseBaseFormFilter(tokenStream);
        }
    }

    /** {@code kuromoji_part_of_speech}: drops tokens by POS tag; default stoptags = JapaneseAnalyzer's. */
    static final class PartOfSpeechFilter extends AbstractTokenFilterFactory {
        private final Set<String> stopTags = new HashSet<>();

        PartOfSpeechFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            List<String> tags = Analysis.parseWordList(env, settings, "stoptags", s -> s);
            stopTags.addAll(tags != null ? tags : JapaneseAnalyzer.getDefaultStopTags());
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new JapanesePartOfSpeechStopFilter(tokenStream, stopTags);
        }
    }

    /**
     * {@code ja_stop}: stop words, default {@code _japanese_} (JapaneseAnalyzer's list); also accepts
     * stopwords/stopwords_path, ignore_case and remove_trailing like the generic stop filter.
     */
    static final class JaStopFilter extends AbstractTokenFilterFactory {
        private final CharArraySet stopWords;
        private final boolean removeTrailing;

        JaStopFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            boolean ignoreCase = settings.getAsBoolean("ignore_case", false);
            this.removeTrailing = settings.getAsBoolean("remove_trailing", true);
            this.stopWords = Analysis.parseWords(env, settings, "stopwords", JapaneseAnalyzer.getDefaultStopSet(),
                Map.<String, Set<?>>of("_japanese_", JapaneseAnalyzer.getDefaultStopSet()), ignoreCase);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            // remove_trailing=false keeps a trailing stop word while the user is still typing (suggesters).
            return removeTrailing ? new StopFilter(tokenStream, stopWords) : new SuggestStopFilter(tokenStream, stopWords);
        }
    }

    /** {@code kuromoji_stemmer}: strips the trailing long-vowel mark from katakana (コンピューター -> コンピュータ). */
    static final class KatakanaStemFilter extends AbstractTokenFilterFactory {
        private final int minimumLength;

        KatakanaStemFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            this.minimumLength = settings.getAsInt("minimum_length", JapaneseKatakanaStemFilter.DEFAULT_MINIMUM_LENGTH);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new JapaneseKatakanaStemFilter(tokenStream, minimumLength);
        }
    }

    /** {@code kuromoji_readingform}: replaces tokens with their reading (katakana, or romaji if use_romaji). */
    static final class ReadingFormFilter extends AbstractTokenFilterFactory {
        private final boolean useRomaji;

        ReadingFormFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            this.useRomaji = settings.getAsBoolean("use_romaji", false);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new JapaneseReadingFormFilter(tokenStream, useRomaji);
        }
    }

    /** {@code kuromoji_number}: kanji numerals -> Arabic digits (第三十二条 -> 第32条), handy for article numbers. */
    static final class NumberFilter extends AbstractTokenFilterFactory {
        NumberFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new JapaneseNumberFilter(tokenStream);
        }
    }

    /** {@code kuromoji_iteration_mark} char filter: expands 々/ゝ/ヽ (normalize_kanji, normalize_kana default true). */
    static final class IterationMarkCharFilter extends AbstractCharFilterFactory implements NormalizingCharFilterFactory {
        private final boolean normalizeKanji;
        private final boolean normalizeKana;

        IterationMarkCharFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name);
            this.normalizeKanji = settings.getAsBoolean("normalize_kanji", JapaneseIterationMarkCharFilter.NORMALIZE_KANJI_DEFAULT);
            this.normalizeKana = settings.getAsBoolean("normalize_kana", JapaneseIterationMarkCharFilter.NORMALIZE_KANA_DEFAULT);
        }

        @Override
        public Reader create(Reader reader) {
            return new JapaneseIterationMarkCharFilter(reader, normalizeKanji, normalizeKana);
        }
    }

    /**
     * {@code kuromoji} analyzer: Lucene's JapaneseAnalyzer (tokenizer + baseform, POS stop, CJK width,
     * ja_stop, katakana stem, lowercase). Settings: mode, stopwords/stopwords_path, user dictionary.
     */
    static final class KuromojiAnalyzerProvider extends AbstractIndexAnalyzerProvider<JapaneseAnalyzer> {
        private final JapaneseAnalyzer analyzer;

        KuromojiAnalyzerProvider(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            CharArraySet stopWords = Analysis.parseStopWords(env, settings, JapaneseAnalyzer.getDefaultStopSet());
            this.analyzer = new JapaneseAnalyzer(userDictionary(env, settings), mode(settings), stopWords,
                JapaneseAnalyzer.getDefaultStopTags());
        }

        @Override
        public JapaneseAnalyzer get() {
            return analyzer;
        }
    }
}
