package org.lexrerank.analysis;

import java.io.Reader;

import com.ibm.icu.text.FilteredNormalizer2;
import com.ibm.icu.text.Normalizer2;
import com.ibm.icu.text.UnicodeSet;

import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.icu.ICUFoldingFilter;
import org.apache.lucene.analysis.icu.ICUNormalizer2CharFilter;
import org.apache.lucene.analysis.icu.ICUNormalizer2Filter;
import org.apache.lucene.analysis.icu.segmentation.DefaultICUTokenizerConfig;
import org.apache.lucene.analysis.icu.segmentation.ICUTokenizer;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.IndexSettings;
import org.opensearch.index.analysis.AbstractCharFilterFactory;
import org.opensearch.index.analysis.AbstractIndexAnalyzerProvider;
import org.opensearch.index.analysis.AbstractTokenFilterFactory;
import org.opensearch.index.analysis.AbstractTokenizerFactory;
import org.opensearch.index.analysis.NormalizingCharFilterFactory;
import org.opensearch.index.analysis.NormalizingTokenFilterFactory;

/**
 * ICU components (Lucene {@code lucene-analysis-icu} + icu4j). Setting names and defaults mirror the
 * official OpenSearch {@code analysis-icu} plugin.
 */
final class IcuFactories {

    private IcuFactories() {}

    /** Same default as the official plugin: NFKC + case folding, the usual choice for search. */
    static final String DEFAULT_NORMALIZATION = "nfkc_cf";

    /**
     * Official plugins accept {@code unicode_set_filter} (e.g. {@code "[^åäöÅÄÖ]"}) to restrict which
     * characters a normalizer touches; implemented with icu4j's FilteredNormalizer2.
     */
    static Normalizer2 withUnicodeSetFilter(Normalizer2 normalizer, Settings settings) {
        String filter = settings.get("unicode_set_filter");
        if (filter == null) {
            return normalizer;
        }
        UnicodeSet set = new UnicodeSet(filter);
        set.freeze();
        return new FilteredNormalizer2(normalizer, set);
    }

    /** name/method = nfc|nfkc|nfkc_cf; mode = compose|decompose (anything else -> compose, as upstream). */
    static Normalizer2 normalizer(Settings settings, String methodKey, boolean honourMode) {
        String method = settings.get(methodKey, DEFAULT_NORMALIZATION);
        Normalizer2.Mode mode = honourMode && "decompose".equals(settings.get("mode"))
            ? Normalizer2.Mode.DECOMPOSE
            : Normalizer2.Mode.COMPOSE;
        // getInstance throws IllegalArgumentException for an unknown name, which OpenSearch reports
        // as a bad index setting - what we want.
        return withUnicodeSetFilter(Normalizer2.getInstance(null, method, mode), settings);
    }

    /** {@code icu_tokenizer}: UAX#29 word breaking plus dictionary-based segmentation for CJK/Thai/Myanmar etc. */
    static final class IcuTokenizerFactory extends AbstractTokenizerFactory {
        IcuTokenizerFactory(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, settings, name);
            // Custom RBBI rule files are the one official setting we do not carry; fail loudly rather
            // than silently tokenizing differently from what the template author expected.
            if (settings.hasValue("rule_files")) {
                throw new IllegalArgumentException("[icu_tokenizer] setting [rule_files] is not supported by lexrerank-analysis-intl");
            }
        }

        @Override
        public Tokenizer create() {
            // cjkAsWords=true, myanmarAsWords=true: the same configuration the official plugin uses.
            return new ICUTokenizer(new DefaultICUTokenizerConfig(true, true));
        }
    }

    /** {@code icu_folding}: UTR#30 folding (case, accents, width...), e.g. "Người" -> "nguoi". */
    static final class FoldingFilter extends AbstractTokenFilterFactory implements NormalizingTokenFilterFactory {
        private final Normalizer2 normalizer;

        FoldingFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            this.normalizer = withUnicodeSetFilter(ICUFoldingFilter.NORMALIZER, settings);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new ICUFoldingFilter(tokenStream, normalizer);
        }
    }

    /** {@code icu_normalizer} token filter. Like upstream it always composes; {@code mode} is char-filter only. */
    static final class NormalizerFilter extends AbstractTokenFilterFactory implements NormalizingTokenFilterFactory {
        private final Normalizer2 normalizer;

        NormalizerFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            this.normalizer = normalizer(settings, "name", false);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new ICUNormalizer2Filter(tokenStream, normalizer);
        }
    }

    /** {@code icu_normalizer} char filter: normalizes before tokenization (settings name, mode, unicode_set_filter). */
    static final class NormalizerCharFilter extends AbstractCharFilterFactory implements NormalizingCharFilterFactory {
        private final Normalizer2 normalizer;

        NormalizerCharFilter(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name);
            this.normalizer = normalizer(settings, "name", true);
        }

        @Override
        public Reader create(Reader reader) {
            return new ICUNormalizer2CharFilter(reader, normalizer);
        }
    }

    /**
     * {@code icu_analyzer}: icu_normalizer char filter + icu_tokenizer + icu_normalizer token filter,
     * as in the official plugin (settings method, mode, unicode_set_filter).
     */
    static final class IcuAnalyzerProvider extends AbstractIndexAnalyzerProvider<Analyzer> {
        private final Normalizer2 normalizer;

        IcuAnalyzerProvider(IndexSettings indexSettings, Environment env, String name, Settings settings) {
            super(indexSettings, name, settings);
            this.normalizer = normalizer(settings, "method", true);
        }

        @Override
        public Analyzer get() {
            final Normalizer2 n = normalizer;
            return new Analyzer() {
                @Override
                protected Reader initReader(String fieldName, Reader reader) {
                    return new ICUNormalizer2CharFilter(reader, n);
                }

                @Override
                protected TokenStreamComponents createComponents(String fieldName) {
                    Tokenizer source = new ICUTokenizer(new DefaultICUTokenizerConfig(true, true));
                    return new TokenStreamComponents(source, new ICUNormalizer2Filter(source, n));
                }
            };
        }
    }
}
