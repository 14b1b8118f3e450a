package org.lexrerank.analysis;

import java.util.Map;
import java.util.TreeMap;

import org.apache.lucene.analysis.Analyzer;
import org.opensearch.index.analysis.AnalyzerProvider;
import org.opensearch.index.analysis.CharFilterFactory;
import org.opensearch.index.analysis.TokenFilterFactory;
import org.opensearch.index.analysis.TokenizerFactory;
import org.opensearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.opensearch.plugins.AnalysisPlugin;
import org.opensearch.plugins.Plugin;

/**
 * Stand-in for the official {@code analysis-icu} and {@code analysis-kuromoji} plugins, whose zips are
 * not published on Maven Central. It wraps the Lucene analysis modules that OpenSearch itself is built
 * on, under the same component names and with the same common settings, so that index templates
 * written for the official plugins work unchanged. Because the names are the same, it must not be
 * installed next to the official plugins (OpenSearch rejects duplicate analysis component names).
 */
public class IntlAnalysisPlugin extends Plugin implements AnalysisPlugin {

    @Override
    public Map<String, AnalysisProvider<CharFilterFactory>> getCharFilters() {
        Map<String, AnalysisProvider<CharFilterFactory>> m = new TreeMap<>();
        m.put("icu_normalizer", IcuFactories.NormalizerCharFilter::new);
        m.put("kuromoji_iteration_mark", KuromojiFactories.IterationMarkCharFilter::new);
        return m;
    }

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        Map<String, AnalysisProvider<TokenizerFactory>> m = new TreeMap<>();
        m.put("icu_tokenizer", IcuFactories.IcuTokenizerFactory::new);
        m.put("kuromoji_tokenizer", KuromojiFactories.KuromojiTokenizerFactory::new);
        return m;
    }

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        Map<String, AnalysisProvider<TokenFilterFactory>> m = new TreeMap<>();
        m.put("icu_folding", IcuFactories.FoldingFilter::new);
        m.put("icu_normalizer", IcuFactories.NormalizerFilter::new);
        m.put("kuromoji_baseform", KuromojiFactories.BaseFormFilter::new);
        m.put("kuromoji_part_of_speech", KuromojiFactories.PartOfSpeechFilter::new);
        m.put("ja_stop", KuromojiFactories.JaStopFilter::new);
        m.put("kuromoji_stemmer", KuromojiFactories.KatakanaStemFilter::new);
        m.put("kuromoji_readingform", KuromojiFactories.ReadingFormFilter::new);
        m.put("kuromoji_number", KuromojiFactories.NumberFilter::new);
        return m;
    }

    @Override
    public Map<String, AnalysisProvider<AnalyzerProvider<? extends Analyzer>>> getAnalyzers() {
        Map<String, AnalysisProvider<AnalyzerProvider<? extends Analyzer>>> m = new TreeMap<>();
        m.put("icu_analyzer", IcuFactories.IcuAnalyzerProvider::new);
        m.put("kuromoji", KuromojiFactories.KuromojiAnalyzerProvider::new);
        return m;
    }
}
