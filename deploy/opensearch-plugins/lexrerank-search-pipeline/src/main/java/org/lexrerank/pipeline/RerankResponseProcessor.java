package org.lexrerank.pipeline;

import java.net.URI;
import java.net.URISyntaxException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BiFunction;
import java.util.function.Consumer;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.action.search.SearchRequest;
import org.opensearch.action.search.SearchResponse;
import org.opensearch.action.search.SearchResponseSections;
import org.opensearch.action.support.ContextPreservingActionListener;
import org.opensearch.common.util.concurrent.ThreadContext;
import org.opensearch.core.action.ActionListener;
import org.opensearch.search.SearchExtBuilder;
import org.opensearch.search.SearchHit;
import org.opensearch.search.SearchHits;
import org.opensearch.search.pipeline.AbstractProcessor;
import org.opensearch.search.pipeline.PipelineProcessingContext;
import org.opensearch.search.pipeline.Processor;
import org.opensearch.search.pipeline.SearchResponseProcessor;
import org.opensearch.search.profile.SearchProfileShardResults;
import org.opensearch.threadpool.Scheduler;

/**
 * The response half: reranks the window through the rerank service, fail-open.
 *
 * <p>Whatever goes wrong on the rerank side (service down, slow, erroring, an answer that does
 * not fit), the search answers its first-stage order, paged, with {@code ext.rerank.status =
 * "fallback"}, the reason code and the reason: never a failed search. The deadline
 * ({@code timeout_ms}) counts from the request processor's start, as the gateway's counts from
 * the request's arrival; the HTTP call is asynchronous and a timer on OpenSearch's scheduler
 * answers at the deadline whatever the network does.
 */
final class RerankResponseProcessor extends AbstractProcessor implements SearchResponseProcessor {

    private static final Logger LOG = LogManager.getLogger(RerankResponseProcessor.class);
    static final int DEFAULT_TIMEOUT_MS = 1000;
    /** Left to the transport and the service's clean-up: the service is asked to answer this much earlier. */
    static final long SERVICE_MARGIN_MS = 20;

    private final RerankService service;
    private final String model;  // null: the service's default
    private final int defaultWindow;
    private final int defaultTimeoutMs;
    private final String queryTextPath;
    private final ThreadContext threadContext;
    private final BiFunction<Long, Runnable, Scheduler.ScheduledCancellable> scheduler;

    RerankResponseProcessor(String tag, String description, boolean ignoreFailure, RerankService service, String model,
        int defaultWindow, int defaultTimeoutMs, String queryTextPath, ThreadContext threadContext,
        BiFunction<Long, Runnable, Scheduler.ScheduledCancellable> scheduler) {
        super(tag, description, ignoreFailure);
        this.service = service;
        this.model = model;
        this.defaultWindow = defaultWindow;
        this.defaultTimeoutMs = defaultTimeoutMs;
        this.queryTextPath = queryTextPath;
        this.threadContext = threadContext;
        this.scheduler = scheduler;
    }

    @Override
    public String getType() {
        return LexrerankSearchPipelinePlugin.TYPE;
    }

    @Override
    public SearchResponse processResponse(SearchRequest request, SearchResponse response) {
        throw new UnsupportedOperationException("the lexrerank response processor runs asynchronously only");
    }

    /** What one search asked for, and how far its deadline has run. */
    private static final class Plan {
        String queryText;
        String model;
        int window;
        int timeoutMs;
        boolean explain;
        int from;
        int size;
        long startedNanos;
        double firstStageMs;
        String problem;  // a reason to fall back before calling the service (bad_request)
    }

    @Override
    public void processResponseAsync(SearchRequest request, SearchResponse response, PipelineProcessingContext context,
        ActionListener<SearchResponse> listener) {
        final Plan plan;
        try {
            plan = plan(request, response, context);
        } catch (Exception e) {
            listener.onFailure(e);  // a bad request: a 400 with the gateway's message (unless ignore_failure)
            return;
        }
        SearchHit[] hits = response.getHits().getHits();
        int inWindow = Math.min(plan.window, hits.length);
        if (plan.problem != null) {
            listener.onResponse(fallback(response, plan, "bad_request", plan.problem, null, 0));
            return;
        }
        if (inWindow == 0) {  // nothing to rerank: ok, as the gateway answers
            listener.onResponse(rebuilt(response, WindowMerge.page(hits, plan.from, plan.size), null,
                report(plan, "ok", null, null, null, 0, 0, 0)));
            return;
        }
        long remainingMs = (long) (plan.timeoutMs - elapsedMs(plan));
        if (remainingMs <= SERVICE_MARGIN_MS) {
            listener.onResponse(fallback(response, plan, "deadline_passed",
                "the deadline passed before the rerank could start", null, 0));
            return;
        }
        Map<String, Object> call = serviceRequest(request, plan, hits, inWindow, remainingMs - SERVICE_MARGIN_MS);
        // Exactly one of the answer and the deadline timer completes the search.
        AtomicBoolean answered = new AtomicBoolean();
        ActionListener<SearchResponse> once = ContextPreservingActionListener.wrapPreservingContext(listener, threadContext);
        long rerankStarted = System.nanoTime();
        Scheduler.ScheduledCancellable timer = scheduler.apply(remainingMs, () -> {
            if (answered.compareAndSet(false, true)) {
                once.onResponse(fallback(response, plan, "timeout", "no answer from the rerank service at "
                    + service.endpoint() + " within " + plan.timeoutMs + " ms", null, msSince(rerankStarted)));
            }
        });
        try {
            service.call(call, remainingMs).whenComplete((answer, error) -> {
                if (!answered.compareAndSet(false, true)) {
                    return;  // the deadline answered already
                }
                timer.cancel();
                double rerankMs = msSince(rerankStarted);
                SearchResponse merged;
                try {
                    merged = error == null ? merge(response, plan, answer, rerankMs) : failed(response, plan, error, rerankMs);
                } catch (Exception e) {  // a bug on this side must not fail the search
                    LOG.warn("lexrerank merge failed", e);
                    merged = fallback(response, plan, "gateway_error", "plugin error: " + e, null, rerankMs);
                }
                once.onResponse(merged);
            });
        } catch (RuntimeException e) {  // e.g. a SecurityException: fail open all the same
            if (answered.compareAndSet(false, true)) {
                timer.cancel();
                LOG.warn("lexrerank call failed", e);
                once.onResponse(fallback(response, plan, "service_unavailable", "the rerank call could not start: " + e,
                    null, 0));
            }
        }
    }

    private Plan plan(SearchRequest request, SearchResponse response, PipelineProcessingContext context) throws Exception {
        Map<String, Object> options = RerankExt.of(request.source() == null ? null : request.source().ext());
        Plan plan = new Plan();
        plan.window = options.containsKey("window_size")
            ? RerankExt.integer(options.get("window_size"), "ext.rerank.window_size", 1, RerankExt.MAX_WINDOW)
            : defaultWindow;
        plan.timeoutMs = options.containsKey("timeout_ms")
            ? RerankExt.integer(options.get("timeout_ms"), "ext.rerank.timeout_ms", 1, RerankExt.MAX_TIMEOUT_MS)
            : defaultTimeoutMs;
        plan.model = options.containsKey("model") ? (String) options.get("model") : model;
        plan.explain = Boolean.TRUE.equals(options.get("explain"));
        plan.queryText = QueryText.resolve(options, queryTextPath, request.source());
        if (plan.queryText == null) {
            throw new IllegalArgumentException("the lexrerank pipeline needs the query text: set "
                + "ext.rerank.query_context.query_text (or query_text_path)");
        }
        Object started = context == null ? null : context.getAttribute(WindowRequestProcessor.STARTED_NANOS);
        if (started instanceof Long) {
            plan.startedNanos = (Long) started;
            plan.from = (Integer) context.getAttribute(WindowRequestProcessor.FROM);
            plan.size = (Integer) context.getAttribute(WindowRequestProcessor.SIZE);
            int fetched = (Integer) context.getAttribute(WindowRequestProcessor.FETCHED);
            if (plan.window > fetched) {
                plan.problem = "the response processor's window_size " + plan.window + " is larger than the " + fetched
                    + " hits the request processor fetched: set the same window_size on both lexrerank processors";
            }
        } else {
            // No request processor: the first stage ran as sent; its page must hold the window.
            plan.startedNanos = System.nanoTime() - response.getTook().nanos();
            plan.from = 0;
            plan.size = response.getHits().getHits().length;
            int from = request.source() == null ? 0 : Math.max(request.source().from(), 0);
            int size = request.source() == null || request.source().size() < 0 ? WindowRequestProcessor.DEFAULT_SIZE
                : request.source().size();
            if (from > 0 || (size < plan.window && response.getHits().getHits().length >= size)) {
                plan.problem = "the pipeline has no lexrerank request processor, which fetches the whole window: add "
                    + "{\"lexrerank\": {}} to its request_processors";
            }
        }
        plan.firstStageMs = elapsedMs(plan);
        return plan;
    }

    private Map<String, Object> serviceRequest(SearchRequest request, Plan plan, SearchHit[] hits, int inWindow,
        long serviceTimeoutMs) {
        List<Map<String, Object>> window = new ArrayList<>(inWindow);
        for (int i = 0; i < inWindow; i++) {
            Map<String, Object> hit = new LinkedHashMap<>();
            hit.put("_id", hits[i].getId());
            // The float's shortest decimal, as OpenSearch's JSON (and so the gateway) spells it.
            float score = hits[i].getScore();
            hit.put("_score", Float.isNaN(score) ? null : Double.parseDouble(Float.toString(score)));
            if (hits[i].getIndex() != null) {
                hit.put("_index", hits[i].getIndex());
            }
            window.add(hit);
        }
        Map<String, Object> call = new LinkedHashMap<>();
        call.put("version", RerankService.PROTOCOL_VERSION);
        String[] indices = request.indices();
        call.put("index", indices != null && indices.length > 0 ? String.join(",", indices) : "_all");
        call.put("query_text", plan.queryText);
        call.put("hits", window);
        if (plan.model != null) {
            call.put("model", plan.model);
        }
        call.put("explain", plan.explain);
        call.put("timeout_ms", serviceTimeoutMs);
        call.put("window_size", plan.window);
        return call;
    }

    private SearchResponse merge(SearchResponse response, Plan plan, Map<String, Object> answer, double rerankMs)
        throws Exception {
        Object report = answer.get("rerank");
        Map<?, ?> block = report instanceof Map ? (Map<?, ?>) report : Map.of();
        if (!"ok".equals(answer.get("status"))) {
            Object code = block.get("reason_code");
            Object reason = block.get("reason");
            return fallback(response, plan, code == null ? "bad_answer" : String.valueOf(code),
                reason == null ? "the rerank service fell back" : String.valueOf(reason), block, rerankMs);
        }
        long mergeStarted = System.nanoTime();
        SearchHit[] page;
        try {
            Object hits = answer.get("hits");
            if (!(hits instanceof List)) {
                throw new WindowMerge.BadAnswer("the answer has no hits list");
            }
            page = WindowMerge.reranked(response.getHits().getHits(), plan.window, (List<?>) hits, plan.from, plan.size);
        } catch (WindowMerge.BadAnswer e) {
            return fallback(response, plan, "bad_answer", "bad service answer: " + e.getMessage(), block, rerankMs);
        }
        Float maxScore = null;
        List<?> answered = (List<?>) answer.get("hits");
        if (!answered.isEmpty()) {
            maxScore = ((Number) ((Map<?, ?>) answered.get(0)).get("_score")).floatValue();
        }
        return rebuilt(response, page, maxScore, report(plan, "ok", null, null, block, rerankMs, msSince(mergeStarted),
            answered.size()));
    }

    private SearchResponse failed(SearchResponse response, Plan plan, Throwable error, double rerankMs) {
        while (error instanceof CompletionException && error.getCause() != null) {
            error = error.getCause();
        }
        if (error instanceof RerankService.Failure) {
            RerankService.Failure failure = (RerankService.Failure) error;
            return fallback(response, plan, failure.code, failure.getMessage(), null, rerankMs);
        }
        return fallback(response, plan, "service_unavailable", "the rerank call failed: " + error, null, rerankMs);
    }

    private SearchResponse fallback(SearchResponse response, Plan plan, String code, String reason, Map<?, ?> block,
        double rerankMs) {
        LOG.debug("lexrerank fallback [{}]: {}", code, reason);
        SearchHit[] page = WindowMerge.page(response.getHits().getHits(), plan.from, plan.size);
        return rebuilt(response, page, null, report(plan, "fallback", code, reason, block, rerankMs, 0, 0));
    }

    /** The ext.rerank block: the service's (its keys and model facts), with this side's status and timings. */
    private Map<String, Object> report(Plan plan, String status, String code, String reason, Map<?, ?> block,
        double rerankMs, double mergeMs, int reranked) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("status", status);
        out.put("reason_code", code);
        out.put("reason", reason);
        Object answeredModel = block == null ? null : block.get("model");
        out.put("model", answeredModel != null ? answeredModel : plan.model == null ? "default" : plan.model);
        out.put("model_version", block == null ? null : block.get("model_version"));
        out.put("window_size", plan.window);
        out.put("reranked", reranked);
        Map<String, Object> took = new LinkedHashMap<>();
        took.put("first_stage", round(plan.firstStageMs));
        took.put("rerank", round(rerankMs));
        took.put("merge", round(mergeMs));
        took.put("total", round(elapsedMs(plan)));
        out.put("took_ms", took);
        out.put("worker_ms", block == null ? null : block.get("worker_ms"));
        out.put("query_truncated", block != null && Boolean.TRUE.equals(block.get("query_truncated")));
        return out;
    }

    private static SearchResponse rebuilt(SearchResponse response, SearchHit[] page, Float maxScore, Map<String, Object> report) {
        SearchHits old = response.getHits();
        SearchHits hits = new SearchHits(page, old.getTotalHits(), maxScore == null ? old.getMaxScore() : maxScore,
            old.getSortFields(), old.getCollapseField(), old.getCollapseValues());
        List<SearchExtBuilder> exts = new ArrayList<>();
        SearchResponseSections sections = response.getInternalResponse();
        if (sections.getSearchExtBuilders() != null) {
            for (SearchExtBuilder ext : sections.getSearchExtBuilders()) {
                if (!RerankExt.NAME.equals(ext.getWriteableName())) {
                    exts.add(ext);
                }
            }
        }
        exts.add(new RerankExt(report));
        SearchResponseSections rebuilt = new SearchResponseSections(hits, response.getAggregations(), response.getSuggest(),
            response.isTimedOut(), response.isTerminatedEarly(),
            // Null without profiling: an empty one would add "profile": {"shards": []} to every answer.
            response.getProfileResults() == null || response.getProfileResults().isEmpty() ? null
                : new SearchProfileShardResults(response.getProfileResults()),
            response.getNumReducePhases(), exts, sections.getProcessorResult());
        return new SearchResponse(rebuilt, response.getScrollId(), response.getTotalShards(), response.getSuccessfulShards(),
            response.getSkippedShards(), response.getTook().millis(), response.getPhaseTook(), response.getShardFailures(),
            response.getClusters(), response.pointInTimeId());
    }

    private static double elapsedMs(Plan plan) {
        return (System.nanoTime() - plan.startedNanos) / 1e6;
    }

    private static double msSince(long nanos) {
        return (System.nanoTime() - nanos) / 1e6;
    }

    private static double round(double ms) {
        return Math.round(ms * 1000) / 1000.0;
    }

    static final class Factory implements Processor.Factory<SearchResponseProcessor> {
        private final ThreadContext threadContext;
        private final Consumer<Runnable> genericExecutor;
        private final BiFunction<Long, Runnable, Scheduler.ScheduledCancellable> scheduler;

        Factory(ThreadContext threadContext, Consumer<Runnable> genericExecutor,
            BiFunction<Long, Runnable, Scheduler.ScheduledCancellable> scheduler) {
            this.threadContext = threadContext;
            this.genericExecutor = genericExecutor;
            this.scheduler = scheduler;
        }

        @Override
        public SearchResponseProcessor create(Map<String, Processor.Factory<SearchResponseProcessor>> factories, String tag,
            String description, boolean ignoreFailure, Map<String, Object> config, Processor.PipelineContext context) {
            URI url = serviceUrl(config.remove("service_url"));
            Object model = config.remove("model");
            if (model != null && (!(model instanceof String) || ((String) model).isBlank())) {
                throw new IllegalArgumentException("model must be a non-empty string");
            }
            Object window = config.remove("window_size");
            Object timeout = config.remove("timeout_ms");
            Object apiKey = config.remove("api_key");
            if (apiKey != null && !(apiKey instanceof String)) {
                throw new IllegalArgumentException("api_key must be a string");
            }
            String path = null;
            Object queryContext = config.remove("context");
            if (queryContext != null) {
                if (!(queryContext instanceof Map) || !(((Map<?, ?>) queryContext).get("query_text_path") instanceof String)
                    || ((Map<?, ?>) queryContext).size() != 1) {
                    throw new IllegalArgumentException("context must be {\"query_text_path\": \"...\"}");
                }
                path = (String) ((Map<?, ?>) queryContext).get("query_text_path");
            }
            if (!config.isEmpty()) {
                throw new IllegalArgumentException("unknown setting(s) " + config.keySet() + " of the lexrerank response "
                    + "processor; known: [service_url, model, window_size, timeout_ms, context, api_key]");
            }
            return new RerankResponseProcessor(tag, description, ignoreFailure,
                new RerankService(url, (String) apiKey, genericExecutor::accept), (String) model,
                window == null ? WindowRequestProcessor.DEFAULT_WINDOW
                    : RerankExt.integer(window, "window_size", 1, RerankExt.MAX_WINDOW),
                timeout == null ? DEFAULT_TIMEOUT_MS : RerankExt.integer(timeout, "timeout_ms", 1, RerankExt.MAX_TIMEOUT_MS),
                path, threadContext, scheduler);
        }

        private static URI serviceUrl(Object value) {
            String text = value == null ? "http://127.0.0.1:8000" : String.valueOf(value);
            try {
                URI url = new URI(text);
                if (!("http".equals(url.getScheme()) || "https".equals(url.getScheme())) || url.getHost() == null) {
                    throw new URISyntaxException(text, "not an http(s) URL with a host");
                }
                return url;
            } catch (URISyntaxException e) {
                throw new IllegalArgumentException("service_url must be the rerank service's http(s) URL, e.g. "
                    + "http://127.0.0.1:8000; got " + text);
            }
        }
    }
}
