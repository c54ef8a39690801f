package io.registrysync.test;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

/**
 * A service that registers itself in ZooKeeper through Spring Cloud ZooKeeper discovery
 * (Curator's service-discovery layout), as users' services do; its name, address, port
 * and metadata come from the command line (spring.cloud.zookeeper.*).
 */
@SpringBootApplication
@RestController
public class ZookeeperClientApp {
    @GetMapping("/")
    public String hello() {
        return "ok";
    }

    public static void main(String[] args) {
        SpringApplication.run(ZookeeperClientApp.class, args);
    }
}
