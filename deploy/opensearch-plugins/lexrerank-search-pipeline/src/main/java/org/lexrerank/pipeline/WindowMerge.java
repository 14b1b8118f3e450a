package org.lexrerank.pipeline;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.opensearch.common.xcontent.XContentHelper;
import org.opensearch.common.xcontent.json.JsonXContent;
import org.opensearch.core.common.bytes.BytesReference;
import org.opensearch.core.xcontent.DeprecationHandler;
import org.opensearch.core.xcontent.NamedXContentRegistry;
import org.opensearch.core.xcontent.ToXContent;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.core.xcontent.XContentParser;
import org.opensearch.common.xcontent.XContentFactory;
import org.opensearch.search.SearchHit;

/**
 * The merge of gateway/merge.py on OpenSearch's hits, with every number from the service.
 *
 * <p>The service answered the window in its reranked order with each hit's fused
 * {@code _score} and {@code _rerank} block; here the window's hits are put in that order,
 * given those two fields, followed by the hits past the window in first-stage order, and the
 * page {@code from}/{@code size} is cut. A fallback is the first-stage order, paged.
 */
final class WindowMerge {

    private WindowMerge() {}

    /** An answer that does not fit the window: the search falls back with {@code bad_answer}. */
    static final class BadAnswer extends Exception {
        BadAnswer(String message) {
            super(message);
        }
    }

    /** The page of the reranked hits; {@link BadAnswer} when {@code answerHits} is not the window's. */
    static SearchHit[] reranked(SearchHit[] hits, int window, List<?> answerHits, int from, int size)
        throws BadAnswer, IOException {
        int inWindow = Math.min(window, hits.length);
        Map<String, SearchHit> byId = new HashMap<>();
        for (int i = 0; i < inWindow; i++) {
            byId.put(hits[i].getId(), hits[i]);
        }
        if (answerHits.size() != inWindow) {
            throw new BadAnswer("the service answered " + answerHits.size() + " hits for a window of " + inWindow);
        }
        List<Object[]> ordered = new ArrayList<>();  // {hit, score, _rerank}, checked before any hit is built
        Set<String> seen = new HashSet<>();
        for (Object item : answerHits) {
            if (!(item instanceof Map)) {
                throw new BadAnswer("a hit of the answer is not an object");
            }
            Map<?, ?> answer = (Map<?, ?>) item;
            Object id = answer.get("_id");
            Object score = answer.get("_score");
            Object rerank = answer.get("_rerank");
            if (!(id instanceof String) || !byId.containsKey(id) || !seen.add((String) id)) {
                throw new BadAnswer("the service answered for other candidates than the first stage's");
            }
            if (!(score instanceof Number) || !Double.isFinite(((Number) score).doubleValue()) || !(rerank instanceof Map)) {
                throw new BadAnswer("hit " + id + " of the answer lacks a numeric _score or a _rerank object");
            }
            ordered.add(new Object[] { byId.get(id), ((Number) score).doubleValue(), rerank });
        }
        List<SearchHit> all = new ArrayList<>(hits.length);
        int end = (int) Math.min((long) from + size, hits.length);
        for (int i = 0; i < ordered.size(); i++) {
            Object[] entry = ordered.get(i);
            // Only the hits of the page are rebuilt: the others are dropped anyway.
            all.add(i >= from && i < end ? withRerank((SearchHit) entry[0], (double) entry[1], (Map<?, ?>) entry[2])
                : (SearchHit) entry[0]);
        }
        all.addAll(Arrays.asList(hits).subList(inWindow, hits.length));
        return page(all.toArray(new SearchHit[0]), from, size);
    }

    static SearchHit[] page(SearchHit[] hits, int from, int size) {
        int start = Math.min(from, hits.length);
        int end = (int) Math.min((long) from + size, hits.length);
        return Arrays.copyOfRange(hits, start, Math.max(start, end));
    }

    /**
     * {@code hit} with the fused {@code _score} and a top-level {@code _rerank}, as the gateway
     * writes them. {@code _rerank} is a metadata field (rendered at the hit's top level); a hit's
     * metadata fields are fixed at construction, so the hit is rebuilt through its own JSON,
     * which keeps everything it renders ({@code _source}, highlight, sort, inner hits, ...).
     */
    static SearchHit withRerank(SearchHit hit, double score, Map<?, ?> rerank) throws IOException {
        String rendered = BytesReference.bytes(hit.toXContent(XContentFactory.jsonBuilder(), ToXContent.EMPTY_PARAMS))
            .utf8ToString();
        Map<String, Object> map = XContentHelper.convertToMap(JsonXContent.jsonXContent, rendered, true);
        map.put("_score", score);
        map.put("_rerank", rerank);
        XContentBuilder builder = XContentFactory.jsonBuilder().map(map);
        try (XContentParser parser = JsonXContent.jsonXContent.createParser(NamedXContentRegistry.EMPTY,
            DeprecationHandler.THROW_UNSUPPORTED_OPERATION, BytesReference.toBytes(BytesReference.bytes(builder)))) {
            parser.nextToken();
            SearchHit rebuilt = SearchHit.fromXContent(parser);
            // The float _score of the parsed hit; the JSON number was the fused double.
            rebuilt.score((float) score);
            if (hit.getShard() != null) {
                rebuilt.shard(hit.getShard());
            }
            return rebuilt;
        }
    }
}
