package org.lexrerank.pipeline;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.opensearch.action.OriginalIndices;
import org.opensearch.core.common.bytes.BytesArray;
import org.opensearch.core.common.bytes.BytesReference;
import org.opensearch.core.index.shard.ShardId;
import org.opensearch.core.xcontent.ToXContent;
import org.opensearch.common.xcontent.XContentFactory;
import org.opensearch.index.query.QueryBuilders;
import org.opensearch.search.SearchHit;
import org.opensearch.search.SearchShardTarget;
import org.opensearch.search.builder.SearchSourceBuilder;

/**
 * The plugin's pure parts, without a node: the window merge, the ext.rerank checks and the
 * query text. A plain main (run by {@code build.sh --test}): no test framework jar to fetch.
 */
public final class PluginTests {

    private static int run = 0;

    public static void main(String[] args) throws Exception {
        mergeReordersTheWindowAndPages();
        mergeRefusesAnAnswerForOtherCandidates();
        fallbackPagesInFirstStageOrder();
        extChecksMatchTheGateway();
        queryTextIsFoundAsTheGatewayFindsIt();
        System.out.println("PluginTests: " + run + " tests passed");
    }

    private static void check(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }

    private static SearchHit[] hits(int n) {
        SearchHit[] out = new SearchHit[n];
        for (int i = 0; i < n; i++) {
            SearchHit hit = new SearchHit(i, "d" + (i + 1), Map.of(), Map.of());
            hit.score(n - i);
            hit.sourceRef(new BytesArray("{\"t\":" + (i + 1) + "}"));
            hit.shard(new SearchShardTarget("node", new ShardId("idx", "uuid", 0), null, OriginalIndices.NONE));
            out[i] = hit;
        }
        return out;
    }

    private static Map<String, Object> answerHit(String id, double score, int rank) {
        Map<String, Object> rerank = new LinkedHashMap<>();
        rerank.put("first_stage_rank", rank);
        rerank.put("first_stage_score", 5.0 - rank);
        rerank.put("model_score", score * 2);
        Map<String, Object> hit = new LinkedHashMap<>();
        hit.put("_id", id);
        hit.put("_score", score);
        hit.put("_rerank", rerank);
        return hit;
    }

    private static String json(SearchHit hit) throws Exception {
        return BytesReference.bytes(hit.toXContent(XContentFactory.jsonBuilder(), ToXContent.EMPTY_PARAMS)).utf8ToString();
    }

    static void mergeReordersTheWindowAndPages() throws Exception {
        SearchHit[] first = hits(5);  // d1..d5, window 3
        List<Object> answer = List.of(answerHit("d3", 0.9, 3), answerHit("d1", 0.8, 1), answerHit("d2", 0.7, 2));
        SearchHit[] page = WindowMerge.reranked(first, 3, answer, 1, 3);
        check(page.length == 3, "page of 3");
        check(page[0].getId().equals("d1") && page[1].getId().equals("d2") && page[2].getId().equals("d4"),
            "reranked window then the tail, paged from 1");
        check(Math.abs(page[0].getScore() - 0.8f) < 1e-6, "fused _score");
        check(page[2].getScore() == 2f, "the tail keeps its first-stage score");
        String rendered = json(page[0]);
        Map<String, Object> parsed = org.opensearch.common.xcontent.XContentHelper.convertToMap(
            org.opensearch.common.xcontent.json.JsonXContent.jsonXContent, rendered, false);
        check(Map.of("first_stage_rank", 1, "first_stage_score", 4.0, "model_score", 1.6).equals(parsed.get("_rerank")),
            "_rerank at the hit's top level: " + rendered);
        check(rendered.contains("\"_index\":\"idx\"") && rendered.contains("\"_source\":{\"t\":1}"),
            "the rebuilt hit keeps _index and _source: " + rendered);
        check(!json(page[2]).contains("_rerank"), "no _rerank past the window");
        run++;
    }

    static void mergeRefusesAnAnswerForOtherCandidates() throws Exception {
        for (List<Object> answer : List.<List<Object>>of(
            List.of(answerHit("d1", 1, 1), answerHit("x", 1, 2)),
            List.of(answerHit("d1", 1, 1), answerHit("d1", 1, 2)),
            List.of(answerHit("d1", 1, 1)))) {
            try {
                WindowMerge.reranked(hits(2), 2, answer, 0, 10);
                throw new AssertionError("accepted " + answer);
            } catch (WindowMerge.BadAnswer expected) {
                check(expected.getMessage().contains("hits for a window") || expected.getMessage().contains("other candidates"),
                    expected.getMessage());
            }
        }
        Map<String, Object> stringScore = answerHit("d1", 1, 1);
        stringScore.put("_score", "high");
        List<Object> noScore = List.of(stringScore);
        try {
            WindowMerge.reranked(hits(1), 1, noScore, 0, 10);
            throw new AssertionError("accepted a string _score");
        } catch (WindowMerge.BadAnswer expected) {
            run++;
        }
    }

    static void fallbackPagesInFirstStageOrder() {
        SearchHit[] page = WindowMerge.page(hits(5), 3, 10);
        check(page.length == 2 && page[0].getId().equals("d4"), "first-stage order from 3");
        check(WindowMerge.page(hits(2), 5, 10).length == 0, "a page past the hits is empty");
        run++;
    }

    static void extChecksMatchTheGateway() {
        Map<String, String> refused = new LinkedHashMap<>();
        refused.put("{\"size\": 3}", "unknown key(s) ['size'] in ext.rerank; known: ['explain', 'model', "
            + "'query_context', 'timeout_ms', 'window_size']");
        refused.put("{\"window_size\": 0}", "ext.rerank.window_size must be between 1 and 1000, got 0");
        refused.put("{\"window_size\": 1.5}", "ext.rerank.window_size must be an integer, got 1.5");
        refused.put("{\"explain\": \"yes\"}", "ext.rerank.explain must be true or false");
        refused.put("{\"query_context\": {}}", "ext.rerank.query_context needs query_text or query_text_path");
        for (Map.Entry<String, String> item : refused.entrySet()) {
            try {
                RerankExt.check(org.opensearch.common.xcontent.XContentHelper.convertToMap(
                    org.opensearch.common.xcontent.json.JsonXContent.jsonXContent, item.getKey(), true));
                throw new AssertionError("accepted " + item.getKey());
            } catch (IllegalArgumentException e) {
                check(e.getMessage().equals(item.getValue()), e.getMessage());
            }
        }
        check(RerankExt.integer("25", "w", 1, 100) == 25, "digits, as the gateway takes them");
        run++;
    }

    static void queryTextIsFoundAsTheGatewayFindsIt() throws Exception {
        SearchSourceBuilder match = new SearchSourceBuilder().query(QueryBuilders.matchQuery("content", "minor consent"));
        check("minor consent".equals(QueryText.resolve(Map.of(), null, match)), "inferred from match");
        check("minor consent".equals(QueryText.resolve(Map.of("query_context", Map.of("query_text_path",
            "query.match.content")), null, match)), "a path to a match query's full form");
        check("minor consent".equals(QueryText.resolve(Map.of(), "query.match.content", match)), "the processor's path");
        check("given".equals(QueryText.resolve(Map.of("query_context", Map.of("query_text", "given")), null, match)),
            "query_text wins");
        SearchSourceBuilder bool = new SearchSourceBuilder().query(QueryBuilders.boolQuery()
            .must(QueryBuilders.matchQuery("content", "x")));
        check(QueryText.resolve(Map.of(), null, bool) == null, "a bool query has no one text");
        try {
            QueryText.resolve(Map.of("query_context", Map.of("query_text_path", "query.nothing")), null, match);
            throw new AssertionError("a path to nothing was accepted");
        } catch (IllegalArgumentException e) {
            check(e.getMessage().contains("does not lead to a non-empty string"), e.getMessage());
        }
        run++;
    }
}
