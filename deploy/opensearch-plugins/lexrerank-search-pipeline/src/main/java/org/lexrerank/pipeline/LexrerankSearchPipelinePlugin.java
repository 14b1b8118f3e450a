package org.lexrerank.pipeline;

import java.util.List;
import java.util.Map;

import org.opensearch.plugins.Plugin;
import org.opensearch.plugins.SearchPipelinePlugin;
import org.opensearch.plugins.SearchPlugin;
import org.opensearch.search.pipeline.Processor;
import org.opensearch.search.pipeline.SearchRequestProcessor;
import org.opensearch.search.pipeline.SearchResponseProcessor;

/**
 * The {@code lexrerank} search processors and the {@code ext.rerank} search extension.
 *
 * <p>A pipeline uses both processors: the request processor fetches the whole rerank window
 * (from 0, {@code max(window_size, from + size)} hits) and notes the page asked for; the
 * response processor sends the window to the rerank service ({@code POST /_lexrerank/rerank}
 * of the lexrerank gateway), reorders it by the answer and cuts the page. See README.md.
 */
public class LexrerankSearchPipelinePlugin extends Plugin implements SearchPipelinePlugin, SearchPlugin {

    /** The processor type of both processors, as in {@code {"lexrerank": {...}}}. */
    public static final String TYPE = "lexrerank";

    @Override
    public List<SearchExtSpec<?>> getSearchExts() {
        // Without it OpenSearch refuses a search whose ext names "rerank".
        return List.of(new SearchExtSpec<>(RerankExt.NAME, RerankExt::new, RerankExt::parse));
    }

    @Override
    public Map<String, Processor.Factory<SearchRequestProcessor>> getRequestProcessors(Parameters parameters) {
        return Map.of(TYPE, new WindowRequestProcessor.Factory());
    }

    @Override
    public Map<String, Processor.Factory<SearchResponseProcessor>> getResponseProcessors(Parameters parameters) {
        return Map.of(TYPE, new RerankResponseProcessor.Factory(parameters.threadContext, parameters.genericExecutor,
            parameters.scheduler));
    }
}
