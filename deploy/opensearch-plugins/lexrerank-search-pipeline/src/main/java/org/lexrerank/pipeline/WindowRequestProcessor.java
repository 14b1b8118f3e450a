package org.lexrerank.pipeline;

import java.util.List;
import java.util.Map;

import org.opensearch.action.search.SearchRequest;
import org.opensearch.search.builder.SearchSourceBuilder;
import org.opensearch.search.pipeline.AbstractProcessor;
import org.opensearch.search.pipeline.PipelineProcessingContext;
import org.opensearch.search.pipeline.Processor;
import org.opensearch.search.pipeline.SearchRequestProcessor;
import org.opensearch.search.sort.ScoreSortBuilder;
import org.opensearch.search.sort.SortBuilder;
import org.opensearch.search.sort.SortOrder;

/**
 * The request half: the first stage fetches the whole window from 0, as the gateway's does.
 *
 * <p>Notes the page asked for and the time the search started in the pipeline context, for
 * {@link RerankResponseProcessor}. A request the gateway would refuse to rerank (scroll, a
 * field sort, search_after, point in time, stored_fields _none_) fails with the gateway's
 * message (HTTP 400), unless the processor has {@code ignore_failure}.
 */
final class WindowRequestProcessor extends AbstractProcessor implements SearchRequestProcessor {

    static final String FROM = "lexrerank.from";
    static final String SIZE = "lexrerank.size";
    static final String FETCHED = "lexrerank.fetched";
    static final String STARTED_NANOS = "lexrerank.started_nanos";
    static final int DEFAULT_WINDOW = 100;
    static final int DEFAULT_SIZE = 10;

    private final int defaultWindow;

    WindowRequestProcessor(String tag, String description, boolean ignoreFailure, int defaultWindow) {
        super(tag, description, ignoreFailure);
        this.defaultWindow = defaultWindow;
    }

    @Override
    public String getType() {
        return LexrerankSearchPipelinePlugin.TYPE;
    }

    @Override
    public SearchRequest processRequest(SearchRequest request) {
        throw new UnsupportedOperationException("the lexrerank request processor needs the pipeline context");
    }

    @Override
    public SearchRequest processRequest(SearchRequest request, PipelineProcessingContext context) {
        context.setAttribute(STARTED_NANOS, System.nanoTime());
        String problem = incompatibleReason(request);
        if (problem != null) {
            throw new IllegalArgumentException(problem);
        }
        SearchSourceBuilder source = request.source();
        if (source == null) {
            source = new SearchSourceBuilder();
            request.source(source);
        }
        Map<String, Object> options = RerankExt.of(source.ext());
        int window = options.containsKey("window_size")
            ? RerankExt.integer(options.get("window_size"), "ext.rerank.window_size", 1, RerankExt.MAX_WINDOW)
            : defaultWindow;
        int from = Math.max(source.from(), 0);
        int size = source.size() < 0 ? DEFAULT_SIZE : source.size();
        int fetched = Math.max(window, from + size);
        context.setAttribute(FROM, from);
        context.setAttribute(SIZE, size);
        context.setAttribute(FETCHED, fetched);
        source.from(0).size(fetched);
        return request;
    }

    /** Why the gateway would not rerank this request (gateway/rerank_request.py), or null. */
    static String incompatibleReason(SearchRequest request) {
        if (request.scroll() != null) {
            return "scroll requests are not reranked";
        }
        SearchSourceBuilder source = request.source();
        if (source == null) {
            return null;
        }
        if (source.searchAfter() != null || source.pointInTimeBuilder() != null) {
            return "search_after / point-in-time paging is not reranked";
        }
        if (source.storedFields() != null && source.storedFields().fetchFields() == false) {
            return "stored_fields \"_none_\" drops the hits' _id, which reranking needs: leave it out (or name fields) "
                + "to rerank";
        }
        List<SortBuilder<?>> sorts = source.sorts();
        if (sorts != null) {
            for (SortBuilder<?> sort : sorts) {
                if (!(sort instanceof ScoreSortBuilder) || sort.order() != SortOrder.DESC) {
                    return "requests sorted by a field are not reranked";
                }
            }
        }
        return null;
    }

    static final class Factory implements Processor.Factory<SearchRequestProcessor> {
        @Override
        public SearchRequestProcessor create(Map<String, Processor.Factory<SearchRequestProcessor>> factories, String tag,
            String description, boolean ignoreFailure, Map<String, Object> config, Processor.PipelineContext context) {
            int window = config.containsKey("window_size")
                ? RerankExt.integer(config.remove("window_size"), "window_size", 1, RerankExt.MAX_WINDOW)
                : DEFAULT_WINDOW;
            if (!config.isEmpty()) {
                throw new IllegalArgumentException("unknown setting(s) " + config.keySet()
                    + " of the lexrerank request processor; known: [window_size]");
            }
            return new WindowRequestProcessor(tag, description, ignoreFailure, window);
        }
    }
}
