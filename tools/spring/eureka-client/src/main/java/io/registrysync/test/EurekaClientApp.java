package io.registrysync.test;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

/**
 * A service that registers itself with Eureka through Spring Cloud's Eureka client, as
 * users' services do: its name, address, port and metadata come from the command line
 * (spring.application.name, eureka.instance.*), nothing is written by hand.
 */
@SpringBootApplication
@RestController
public class EurekaClientApp {
    @GetMapping("/")
    public String hello() {
        return "ok";
    }

    public static void main(String[] args) {
        SpringApplication.run(EurekaClientApp.class, args);
    }
}
