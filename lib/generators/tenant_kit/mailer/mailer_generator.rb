# frozen_string_literal: true

require "rails/generators"

module TenantKit
  module Generators
    # bin/rails generate tenant_kit:mailer [--class-name TenantMailer] [--parent ApplicationMailer]
    #
    # Writes the mailer the jobs send through (app/mailers/tenant_mailer.rb)
    # with its four actions (backup_created, backup_failed,
    # restore_completed, restore_failed) and a text and an HTML view of
    # each (app/views/tenant_mailer/). Files that exist are left alone
    # unless --force. The templates are in this file, so the gem's
    # `lib/**/*.rb` carries all of them.
    class MailerGenerator < ::Rails::Generators::Base
      desc "Add the TenantMailer tenant_kit's backup and restore jobs send (four actions, text and HTML views)"

      class_option :class_name, type: :string, default: "TenantMailer", desc: "Mailer class"
      class_option :parent, type: :string, default: "ApplicationMailer", desc: "Its superclass"

      ACTIONS = {
        "backup_created" => ["Backup of <%= @tenant_name %> created",
                             "The archive is <%= @archive_path %> (<%= @result[:rows] %> rows)."],
        "backup_failed" => ["Backup of <%= @tenant_name %> failed", "<%= @error_class %>: <%= @error %>"],
        "restore_completed" => ["<%= @dry_run ? 'Dry run' : 'Restore' %> of <%= @tenant_name %> completed",
                                "Archive: <%= @archive_path %>"],
        "restore_failed" => ["Restore of <%= @tenant_name %> failed",
                             "Archive: <%= @archive_path %>. Nothing was changed. <%= @error_class %>: <%= @error %>"]
      }.freeze

      def create_mailer
        create_file "app/mailers/#{file_name}.rb", mailer_source
      end

      def create_views
        ACTIONS.each do |action, (_, line)|
          create_file "app/views/#{file_name}/#{action}.text.erb", text_view(action, line)
          create_file "app/views/#{file_name}/#{action}.html.erb", html_view(action, line)
        end
      end

      private

      def class_name
        name = options[:class_name].to_s
        raise ArgumentError, "not a class name: #{name.inspect}" unless name.match?(/\A[A-Z]\w*(::[A-Z]\w*)*\z/)

        name
      end

      def file_name
        class_name.underscore
      end

      def mailer_source
        subjects = ACTIONS.map do |action, (subject, _)|
          plain = subject.gsub(/<%= (.+?) %>/) { "\#{#{Regexp.last_match(1).delete_prefix('@')}}" }
          "  def #{action}\n    notify(\"#{plain.gsub('@', '')}\")\n  end\n"
        end
        <<~RUBY
          # frozen_string_literal: true

          # Sent by tenant_kit's BackupJob / RestoreJob (TenantKit::Rails), with
          # params tenant:, user:, background_job:, archive_path:, result:,
          # error:, error_class:, and for restore_completed dry_run:, planned:
          # (per table: insert/update/purge counts), conflicts:, conflict_count:.
          class #{class_name} < #{options[:parent]}
          #{subjects.join("\n")}
            private

            def notify(subject)
              mail(to: recipient, subject: subject)
            end

            def recipient
              user = params[:user]
              user.respond_to?(:email) ? user.email : default_params[:from]
            end

            def tenant_name
              tenant = params[:tenant]
              tenant.respond_to?(:name) ? tenant.name : "tenant \#{tenant}"
            end

            def dry_run
              params[:dry_run]
            end

            # What the views use.
            def initialize_view_state
              @tenant_name = tenant_name
              @archive_path = params[:archive_path]
              @result = params[:result] || {}
              @error = params[:error]
              @error_class = params[:error_class]
              @dry_run = params[:dry_run]
              @planned = params[:planned] || {}
              @conflicts = Array(params[:conflicts])
              @conflict_count = params[:conflict_count].to_i
              @progress_url = nil
            end
            before_action :initialize_view_state
          end
        RUBY
      end

      def text_view(action, line)
        body = +"#{line}\n"
        body << RESTORE_TEXT if action == "restore_completed"
        body
      end

      def html_view(action, line)
        body = +"<p>#{line}</p>\n"
        body << RESTORE_HTML if action == "restore_completed"
        body
      end

      RESTORE_TEXT = <<~'ERB'
        <% if @dry_run %>
        Nothing was changed. A restore would:
        <% @planned.each do |table, counts| %>
        - <%= table %>: <%= counts[:insert] %> to insert, <%= counts[:update] %> to update, <%= counts[:purge] %> to purge
        <% end %>
        <% if @conflict_count.positive? %>
        <%= @conflict_count %> conflict(s): a restore would be refused.
        <% @conflicts.each do |c| %>
        - <%= c[:table] %> <%= c[:key] %>: <%= c[:reason] %>
        <% end %>
        <% else %>
        No conflicts.
        <% end %>
        <% else %>
        Rows restored: <%= @result[:restored] %>.
        <% end %>
      ERB

      RESTORE_HTML = <<~'ERB'
        <% if @dry_run %>
        <p>Nothing was changed. A restore would:</p>
        <table>
          <tr><th>Table</th><th>Insert</th><th>Update</th><th>Purge</th></tr>
        <% @planned.each do |table, counts| %>
          <tr><td><%= table %></td><td><%= counts[:insert] %></td><td><%= counts[:update] %></td><td><%= counts[:purge] %></td></tr>
        <% end %>
        </table>
        <% if @conflict_count.positive? %>
        <p><%= @conflict_count %> conflict(s): a restore would be refused.</p>
        <ul>
        <% @conflicts.each do |c| %>
          <li><%= c[:table] %> <%= c[:key] %>: <%= c[:reason] %></li>
        <% end %>
        </ul>
        <% else %>
        <p>No conflicts.</p>
        <% end %>
        <% else %>
        <p>Rows restored: <%= @result[:restored] %>.</p>
        <% end %>
      ERB
    end
  end
end
